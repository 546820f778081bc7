#!/usr/bin/env python3
"""Malformed and hostile requests against a running `patchead serve` on 127.0.0.1:PORT,
sent over raw sockets (what curl will not send). Standard library only.

usage: serve_malformed.py PORT BANK IMAGE.jpg IDLE_TIMEOUT_S

Each scenario prints "PASS name" or "FAIL name: why". After every hostile scenario the
server must still answer GET /healthz with 200 (it "keeps serving other clients").
Every socket operation has a timeout, so nothing here can hang."""
import json
import socket
import sys
import time

PORT = int(sys.argv[1])
BANK = sys.argv[2]
IMAGE = open(sys.argv[3], "rb").read()
IDLE = float(sys.argv[4])


def report(name, ok, why=""):
    print(f"PASS {name}" if ok else f"FAIL {name}: {why}", flush=True)


def connect(timeout=10):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    s.settimeout(timeout)
    return s


def read_response(s, limit_s=10):
    """Status code and body of one response (None, b'' if the server closed first)."""
    data = b""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            head, body = data.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
            if len(body) >= length:
                status = int(head.split(b" ")[1])
                return status, head.decode("latin-1"), body[:length]
    if not data:
        return None, "", b""
    try:
        return int(data.split(b" ")[1]), data.decode("latin-1"), b""
    except (IndexError, ValueError):
        return None, data.decode("latin-1"), b""


def request(raw, timeout=10):
    s = connect(timeout)
    try:
        s.sendall(raw)
        return read_response(s, timeout)
    finally:
        s.close()


def still_serving(name):
    try:
        status, _, body = request(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        ok = status == 200 and json.loads(body)["status"] == "ok"
    except Exception as e:  # noqa: BLE001 - any failure here is the finding
        ok, status = False, repr(e)
    report(f"{name}_then_healthy", ok, f"healthz answered {status}")


def json_error(body):
    try:
        j = json.loads(body)
        return isinstance(j.get("error"), str) and j["error"] != ""
    except Exception:  # noqa: BLE001
        return False


def post_head(path, length, ctype="image/jpeg", extra=""):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {length}\r\n{extra}Connection: close\r\n\r\n").encode()


PREDICT = f"/v1/banks/{BANK}/predict"

# 1. truncated body: declare the whole image, send half, close.
s = connect()
s.sendall(post_head(PREDICT, len(IMAGE)) + IMAGE[: len(IMAGE) // 2])
s.shutdown(socket.SHUT_WR)
status, _, _ = read_response(s)
s.close()
report("truncated_body_closed", status in (None, 400), f"answered {status}")
still_serving("truncated_body")

# 2. a truncated image as a complete body: the decoder's error, 400.
status, _, body = request(post_head(PREDICT, len(IMAGE) // 2) + IMAGE[: len(IMAGE) // 2])
report("truncated_image_400", status == 400 and json_error(body), f"{status} {body[:200]!r}")

# 3. 0-byte body.
status, _, body = request(post_head(PREDICT, 0))
report("zero_length_400", status == 400 and json_error(body), f"{status} {body[:200]!r}")

# 4. 1 GB declared, nothing sent: refused from the headers alone, at once.
t0 = time.monotonic()
status, head, body = request(post_head(PREDICT, 1 << 30), timeout=10)
report("one_gb_declared_413", status == 413 and json_error(body) and time.monotonic() - t0 < 5,
       f"{status} after {time.monotonic() - t0:.1f}s {body[:200]!r}")
still_serving("one_gb_declared")

# 5. wrong content types.
for ctype in ("text/plain", "application/json", "application/x-www-form-urlencoded"):
    status, _, body = request(post_head(PREDICT, len(IMAGE), ctype) + IMAGE)
    report(f"content_type_{ctype.split('/')[1].replace('-', '_')}_415",
           status == 415 and json_error(body), f"{status} {body[:200]!r}")

# 6. invalid UTF-8 (raw bytes and percent-escaped) and '..' in bank names.
for label, path in (("raw_invalid_utf8", b"/v1/banks/\xff\xfe/predict"),
                    ("escaped_invalid_utf8", b"/v1/banks/%ff%fe/predict"),
                    ("dotdot", b"/v1/banks/../predict"),
                    ("escaped_dotdot", b"/v1/banks/%2e%2e/predict"),
                    ("slash_in_name", b"/v1/banks/a%2fb/predict"),
                    ("long_name", b"/v1/banks/" + b"a" * 300 + b"/predict")):
    raw = (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: "
           + str(len(IMAGE)).encode() + b"\r\nConnection: close\r\n\r\n" + IMAGE)
    status, _, body = request(raw)
    ok = status in (400, 404) and json_error(body)
    if ok:
        try:
            body.decode("utf-8")  # the answer itself is valid UTF-8 JSON
        except UnicodeDecodeError:
            ok = False
    report(f"bank_name_{label}_rejected", ok, f"{status} {body[:200]!r}")
still_serving("bank_names")

# 7. garbage instead of HTTP.
s = connect()
s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n")
status, _, _ = read_response(s)
s.close()
report("garbage_request_line", status in (None, 400, 505), f"answered {status}")
still_serving("garbage_request_line")

# 8. slowloris: headers that never finish -> closed after the idle timeout, while
#    another client is served meanwhile.
s = connect(timeout=IDLE * 4 + 10)
s.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Slow: ")
t0 = time.monotonic()
still_serving("slow_headers_meanwhile")
status, _, _ = read_response(s, IDLE * 4 + 10)
closed_after = time.monotonic() - t0
s.close()
report("slow_headers_closed", closed_after < IDLE * 4 + 5, f"open for {closed_after:.1f}s")

# 9. slow body: one byte per (IDLE / 2) s never idles out, but the whole body must
#    arrive within 6 x IDLE: the server closes the connection then.
s = connect(timeout=IDLE * 12 + 10)
s.sendall(post_head(PREDICT, len(IMAGE)))
t0 = time.monotonic()
closed = False
for i in range(int(IDLE * 12 / (IDLE / 2)) + 4):
    try:
        s.sendall(IMAGE[i:i + 1])
    except (BrokenPipeError, ConnectionResetError):
        closed = True
        break
    s.settimeout(IDLE / 2)
    try:
        if s.recv(1) == b"":
            closed = True
            break
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
        break
elapsed = time.monotonic() - t0
s.close()
report("slow_body_cut", closed and elapsed < IDLE * 6 + 5, f"closed={closed} after {elapsed:.1f}s")
still_serving("slow_body")

# 10. a request split into tiny writes (legitimate, just fragmented) is still answered.
s = connect(timeout=60)
raw = post_head(PREDICT, len(IMAGE)) + IMAGE
for i in range(0, len(raw), 4096):
    s.sendall(raw[i:i + 4096])
status, _, body = read_response(s, 60)
s.close()
report("fragmented_request_200", status == 200 and "score" in json.loads(body or b"{}"), f"{status}")
