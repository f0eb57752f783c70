"""What the CLI tests share: reading a printed field, reading a written JSON strictly, a small scan's arguments."""

import json
import re
from pathlib import Path


def field(text: str, key: str) -> str:
    return re.search(rf"^{key}\s+(.*)$", text, re.M).group(1)


def read_json(path: Path):
    """The JSON file at ``path``, read by a strict parser: NaN and Infinity, which are not JSON, are refused."""
    def refuse(constant: str):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def scan_args(out, *extra):
    return ["scan", "--grid", "-1:1:5", "--grid", "-0.5:0.5:3", "--out", str(out), *extra]
