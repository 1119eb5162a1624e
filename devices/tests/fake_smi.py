"""A real ``nvidia-smi`` executable for tests: it answers each query with a recorded file.

The program is a Python script on ``PATH`` (absolute shebang to the test interpreter), so the
code under test runs a real subprocess and parses real bytes; only the driver is missing.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

_SCRIPT = """#!{python}
import json, sys
from pathlib import Path

answers = json.loads((Path(__file__).parent / "answers.json").read_text())
for argument in sys.argv[1:]:
    for prefix, (stdout_file, exit_code) in answers.items():
        if argument.startswith(prefix):
            if stdout_file:
                sys.stdout.write(Path(stdout_file).read_text())
            sys.exit(exit_code)
sys.stderr.write("fake nvidia-smi: no recorded answer for %r\\n" % (sys.argv[1:],))
sys.exit(99)
"""


def install_recorded_smi(bin_dir: Path, answers: dict[str, tuple[Path | None, int]]) -> Path:
    """Put ``nvidia-smi`` in ``bin_dir``; ``answers`` maps an argument prefix such as
    ``"--query-gpu="`` to (file whose text it prints, exit status)."""
    (bin_dir / "answers.json").write_text(
        json.dumps({k: (str(v[0]) if v[0] else None, v[1]) for k, v in answers.items()})
    )
    script = bin_dir / "nvidia-smi"
    script.write_text(_SCRIPT.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script
