"""ARCHITECTURE.md and the README's layout stay true to the tree: every module is on the map, and every
folder the layout names exists."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_of_the_exporter_is_on_the_map() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "exporter").rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py") and f"`{path.name}`" not in text
    ]
    assert not missing, f"ARCHITECTURE.md does not mention {missing}"


def test_every_folder_in_the_readme_layout_exists() -> None:
    block = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("```", 2)[1]
    parent = ""
    for line in block.strip("\n").splitlines():
        names = line.strip().split("  ")[0].split()  # the paths before the description
        if not line.startswith(" "):
            parent = names[0] if len(names) == 1 and names[0].startswith("exporter/") else ""
        for name in names:
            folder = ROOT / (parent if line.startswith(" ") else "") / name
            if name.endswith("/"):
                assert folder.is_dir(), f"the README's layout names {name}, which is not a folder"
