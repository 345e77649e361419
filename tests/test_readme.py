"""The README's example must run as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    src = README.read_text()
    code = re.search(r"## Ten lines\n\n```python\n(.*?)```", src, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
