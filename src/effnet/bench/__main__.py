"""`python -m effnet.bench peak-child JSON`: the child process of `memory.peak_step_memory`."""

import json
import sys

from .memory import _peak_child

if len(sys.argv) == 3 and sys.argv[1] == "peak-child":
    print(json.dumps(_peak_child(json.loads(sys.argv[2]))))
else:
    sys.exit("usage: python -m effnet.bench peak-child JSON (internal)")
