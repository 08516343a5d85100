"""The documents the code points at exist: every `docs/design.md "Section"` citation names a part of it."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_design_citation_in_the_code_names_a_section_of_docs_design_md():
    design = (ROOT / "docs" / "design.md").read_text()
    files = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.sh", "*.yaml"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    cited, missing = 0, []
    for name in files:
        for match in re.finditer(r'docs/design\.md[ ,]*"([^"]+)"', (ROOT / name).read_text()):
            cited += 1
            section = match.group(1).rstrip(".,:")
            if section not in design:
                missing.append(f"{name}: {section!r}")
    assert cited > 20 and not missing, missing
    assert not [n for n in files if re.search(r"(?<![\w/])DESIGN\.md", (ROOT / n).read_text())], \
        "cite docs/design.md, the copy in the repository"
