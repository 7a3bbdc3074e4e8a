"""Print the digest of pyproject.toml's dependency lists that the lock records."""

import hashlib
import json
import sys
import tomllib
from pathlib import Path

root = Path(__file__).resolve().parent.parent
project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
wanted = {
    "dependencies": sorted(project["dependencies"]),
    "test": sorted(project["optional-dependencies"]["test"]),
    "build": sorted((root / "scripts" / "build-requirements.in").read_text().split()),
}
sys.stdout.write(hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest() + "\n")
