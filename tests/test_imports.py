"""`import kling_budget` stays light: no HTTP client, database driver, web server, plotting or terminal UI."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("httpx", "psycopg", "psycopg_pool", "starlette", "uvicorn", "matplotlib", "rich")


def _imported_after(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(result.stdout)}


def test_import_kling_budget_pulls_in_no_heavy_dependency() -> None:
    """Importing the package (and its public names) imports none of the optional heavy libraries."""
    loaded = _imported_after("import kling_budget; from kling_budget import CostTracker, Budget, PriceTable")
    assert "kling_budget" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
