#!/usr/bin/env python3
"""Writes LINES JSON log lines of about 100 bytes to FILE (a structured logger's output,
for `merge_json` in bench/config_ab.sh). Usage: bench/json_lines.py FILE LINES"""
import os
import sys

path, lines = sys.argv[1], int(sys.argv[2])
with open(path + ".partial", "w") as f:
    chunk = []
    for i in range(lines):
        chunk.append(
            f'{{"ts":"2026-11-25T10:00:{i % 60:02d}.{i % 1000:03d}Z","level":"info",'
            f'"msg":"request {i:09d} took {i % 997}ms","path":"/api/v1/items/{i % 4099}"}}\n'
        )
        if len(chunk) == 50000:
            f.write("".join(chunk))
            chunk = []
    f.write("".join(chunk))
os.rename(path + ".partial", path)
