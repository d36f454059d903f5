"""Run a command and write the peak RSS (KiB) of its process tree to a file; exit with its status.

    python -I bench/_peak.py RESULT_FILE CMD...

The command starts from this small interpreter, not from the bench: Linux carries the RSS a process had when
it forked into its child's ``ru_maxrss`` across ``exec``, so a child of a large bench process would report
at least the bench's own size. From here the floor is this launcher's few MiB.
"""

import os
import subprocess
import sys

proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(proc.returncode if proc.returncode >= 0 else 128 - proc.returncode)
