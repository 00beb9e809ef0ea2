"""The README shows the example files as they are: they run, so the docs cannot drift."""
import re
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent.parent
README = (HERE / "README.md").read_text()


@pytest.mark.parametrize("example", sorted(p.name for p in (HERE / "examples").glob("*.py")))
def test_the_readme_holds_the_example_as_it_is(example):
    code = (HERE / "examples" / example).read_text()
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert code in blocks, "README.md must hold examples/%s in a ```python block, unchanged" \
        % example
