"""The pure core imports nothing heavy: proven by importing every module with those modules blocked."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import lifecycle

BLOCKED = ["prefect", "torch", "transformers", "peft", "evidently", "great_expectations",
           "huggingface_hub", "httpx", "requests", "urllib3", "fastapi", "sqlalchemy", "datasets", "aiohttp"]

SCRIPT = """
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('lifecycle/ must not import ' + name)
sys.meta_path.insert(0, Block())
for m in {modules!r}:
    importlib.import_module(m)
print('ok', len({modules!r}))
"""


def test_lifecycle_imports_no_heavy_or_io_library():
    modules = ["lifecycle." + m.name for m in pkgutil.iter_modules([str(Path(lifecycle.__file__).parent)])]
    assert len(modules) >= 8
    code = SCRIPT.format(blocked=set(BLOCKED), modules=modules)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
