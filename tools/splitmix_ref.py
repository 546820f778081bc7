"""splitmix_ref.py — splitmix64 in plain Python (Steele, Lea, Flood 2014), the reference the
fixture generators use for the library's seeded rules (pe_splitmix64 in src/core/sample.c)."""

MASK = (1 << 64) - 1


def splitmix64(state):
    """One step: returns (new state, 64-bit output)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)
