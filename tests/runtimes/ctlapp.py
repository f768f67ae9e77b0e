"""A tiny stdlib stand-in for a server process, driven through files in a control directory.

Used by the runtime tests (inside a real container, or as a ProcessRuntime child) until the emulator
exists. On start it prints `started pid=<pid> MARK=<$MARK>`; then every 20 ms it looks in CTL_DIR for:
  print  → "<count> <prefix>": prints `<prefix> <i>` for i in 0..count-1 (stdout, flushed)
  exit   → "<code>": exits with that code
  alloc  → anything: allocates (and touches) memory in 8 MiB chunks until killed
Each command file is removed once handled. Write them atomically (write a temp name, then rename).
"""

import os
import sys
import time

ctl = os.environ.get("CTL_DIR") or (sys.argv[1] if len(sys.argv) > 1 else "/ctl")
print(f"started pid={os.getpid()} MARK={os.environ.get('MARK', '')}", flush=True)
hog = []
while True:
    for name in ("print", "exit", "alloc"):
        path = os.path.join(ctl, name)
        try:
            with open(path) as f:
                arg = f.read().strip()
            os.unlink(path)
        except FileNotFoundError:
            continue
        if name == "print":
            count, _, prefix = arg.partition(" ")
            for i in range(int(count)):
                print(f"{prefix} {i}", flush=True)
        elif name == "exit":
            print(f"exiting with {arg}", flush=True)
            sys.exit(int(arg))
        else:
            print("allocating", flush=True)
            while True:
                hog.append(b"\x01" * (8 << 20))
    time.sleep(0.02)
