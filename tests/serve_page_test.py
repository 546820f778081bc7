#!/usr/bin/env python3
"""Drives the web page of `patchead serve` in headless Chromium over the DevTools protocol.

usage: serve_page_test.py CHROMIUM URL SCREENSHOT.png THRESHOLD IMAGE...

Opens URL, puts IMAGE... into the page's file input (as a user choosing files would),
waits until every card is scored, checks what the page shows (a heatmap image that
loaded, a score, an OK/NG badge agreeing with the threshold), moves the threshold slider
to THRESHOLD and checks that the badges re-label without a new request, and saves a
screenshot. Prints one "PASS name" / "FAIL name: why" line per check and a JSON line
"RESULT {...}" with what the page showed (the shell test compares it with the API).

Standard library only (a minimal WebSocket client for the DevTools socket), so it runs
with Debian's /usr/bin/python3. Everything is bounded by timeouts."""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request


class DevTools:
    """A blocking WebSocket client (RFC 6455, text frames) for one DevTools target."""

    def __init__(self, ws_url, timeout=20):
        assert ws_url.startswith("ws://")
        hostport, path = ws_url[5:].split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("DevTools closed the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError("DevTools refused the WebSocket: " + head.split(b"\r\n", 1)[0].decode())
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("DevTools connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv_message(self):
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)  # the server never masks
            op = b0 & 0x0F
            if op == 8:
                raise RuntimeError("DevTools closed the WebSocket")
            if op in (1, 2, 0):
                parts.append(payload)
                if b0 & 0x80:
                    return json.loads(b"".join(parts))

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self._send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = self._recv_message()
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails'].get('text')}: {expr[:80]}")
        return r["result"].get("value")

    def wait_for(self, expr, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.eval(expr):
                return True
            time.sleep(0.1)
        return False


def report(name, ok, why=""):
    print(f"PASS {name}" if ok else f"FAIL {name}: {why}", flush=True)
    return ok


def main():
    chromium, url, shot, threshold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    images = [os.path.abspath(p) for p in sys.argv[5:]]
    profile = tempfile.mkdtemp(prefix="pe_chromium_")
    proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                             f"--user-data-dir={profile}", "--window-size=1280,1000", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        end = time.monotonic() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.monotonic() > end or proc.poll() is not None:
                return report("page_browser_start", False, "Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t.get("type") == "page")
        dt = DevTools(page["webSocketDebuggerUrl"])
        dt.call("Page.enable")
        dt.call("Page.navigate", url=url)
        if not report("page_loads_banks", dt.wait_for("document.body && document.body.dataset.ready === '1' && "
                                                      "document.querySelectorAll('#bank option').length > 0", 15),
                      "the page did not list the banks"):
            return False
        root = dt.call("DOM.getDocument")["root"]["nodeId"]
        node = dt.call("DOM.querySelector", nodeId=root, selector="#files")["nodeId"]
        dt.call("DOM.setFileInputFiles", nodeId=node, files=images)
        n = len(images)
        done = dt.wait_for(f"document.querySelectorAll('.card[data-state=done], .card[data-state=error]').length === {n}", 60)
        report("page_scores_uploads", done, f"{n} cards not finished within 60 s")
        cards = dt.eval("""[...document.querySelectorAll('.card')].map(c => ({
            name: c.querySelector('.name').textContent, state: c.dataset.state,
            score: parseFloat(c.dataset.score), shown: c.querySelector('.score').textContent,
            badge: c.querySelector('.badge').textContent,
            heatmap: (c.querySelector('img') || {}).naturalWidth || 0}))""")
        bank_t = dt.eval("state.threshold")
        ok = all(c["state"] == "done" for c in cards)
        report("page_all_done", ok, json.dumps(cards))
        report("page_heatmaps_rendered", all(c["heatmap"] > 0 for c in cards), json.dumps(cards))
        report("page_scores_shown", all(c["shown"] == f"{c['score']:.4f}" for c in cards), json.dumps(cards))
        want = ["NG" if c["score"] > bank_t else "OK" for c in cards]
        report("page_badges_bank_threshold", [c["badge"] for c in cards] == want,
               f"badges {[c['badge'] for c in cards]} vs {want} at {bank_t}")
        requests_before = dt.eval("performance.getEntriesByType('resource').filter(e => e.name.includes('/predict')).length")
        dt.eval(f"(() => {{ const s = document.getElementById('thr'); s.value = {threshold!r}; "
                "s.dispatchEvent(new Event('input')); return 1; })()")
        time.sleep(0.3)
        relabeled = dt.eval("[...document.querySelectorAll('.card')].map(c => c.querySelector('.badge').textContent)")
        t_now = dt.eval("state.threshold")
        want = ["NG" if c["score"] > t_now else "OK" for c in cards]
        report("page_slider_relabels", relabeled == want and abs(t_now - threshold) < 1e-3 * max(1, threshold),
               f"badges {relabeled} vs {want} at slider {t_now}")
        summary = dt.eval("document.getElementById('nng').textContent + ' / ' + document.getElementById('nok').textContent")
        report("page_summary_counts", summary == f"{want.count('NG')} NG / {want.count('OK')} OK", summary)
        requests_after = dt.eval("performance.getEntriesByType('resource').filter(e => e.name.includes('/predict')).length")
        report("page_slider_no_rescoring", requests_before == requests_after == n,
               f"{requests_before} predict requests before the slider, {requests_after} after (want {n})")
        png = base64.b64decode(dt.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        with open(shot, "wb") as f:
            f.write(png)
        report("page_screenshot", png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000, f"{len(png)} bytes")
        print("RESULT " + json.dumps({"cards": cards, "badges_after_slider": relabeled}), flush=True)
        try:
            dt.call("Browser.close")
        except Exception:
            pass
        return True
    except Exception as e:  # a broken page or browser is a failure, not a crash of the suite
        return report("page_devtools", False, f"{type(e).__name__}: {e}")
    finally:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
