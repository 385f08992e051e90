"""Small dependency-free helpers shared by every layer (time, durations, errors)."""
