"""The README shows the example files as they are: they run, so the docs cannot drift.

A file with sections (lines `# --- name ---`) may be shown one section to a block instead."""
import re
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent.parent
README = (HERE / "README.md").read_text()


@pytest.mark.parametrize("example", sorted(p.name for p in (HERE / "examples").glob("*.py")))
def test_the_readme_holds_the_example_as_it_is(example):
    code = (HERE / "examples" / example).read_text()
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    if code in blocks:
        return
    parts = [part.rstrip("\n") + "\n" for part in re.split(r"\n\n+(?=# --- )", code)]
    missing = [part.splitlines()[0] for part in parts if part not in blocks]
    assert not missing, (
        "README.md must hold examples/%s in a ```python block, or each of its sections in one, "
        "unchanged; not there: %s" % (example, missing))
