"""Run a bench script with the web, database and orchestration packages made unimportable.

Why: the GPU machine that runs bench/gpu_check.sh has torch, transformers and peft but no fastapi, uvicorn,
httpx or prefect. Running the benchmarks through this wrapper here (``--cpu-dry-run``) proves that their whole
code path — serving.backend, serving.batcher, training.lora and what they import — needs none of them: a
blocked package looks uninstalled, exactly as it would there.

Run:  ``python bench/noweb.py bench/train_bench.py --shape tiny ...``
"""

from __future__ import annotations

import importlib.abc
import runpy
import sys

BLOCKED = frozenset({"fastapi", "starlette", "uvicorn", "httpx", "prefect", "sqlalchemy", "alembic", "psycopg",
                     "prometheus_client", "evidently", "great_expectations", "openai", "litellm"})


class _Hidden(importlib.abc.MetaPathFinder):
    """Wraps one import finder so the blocked packages look absent (``find_spec`` None, ``import`` raising
    ModuleNotFoundError): libraries that probe for optional packages (``datasets`` looks for sqlalchemy) then
    behave as they would on the GPU machine instead of failing on a refusal."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        find = getattr(self.inner, "find_spec", None)
        return find(name, path, target) if find else None

    def find_distributions(self, *args, **kwargs):
        # importlib.metadata asks the same finders for installed distributions (versions of transformers' deps).
        find = getattr(self.inner, "find_distributions", None)
        return find(*args, **kwargs) if find else iter(())

    def invalidate_caches(self) -> None:
        invalidate = getattr(self.inner, "invalidate_caches", None)
        if invalidate:
            invalidate()


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python bench/noweb.py SCRIPT [ARGS...]")
    already = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    if already:
        raise SystemExit(f"already imported before the blocker: {already}")
    sys.meta_path[:] = [_Hidden(finder) for finder in sys.meta_path]
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
    leaked = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    if leaked:  # a module object slipped in some other way (e.g. a C extension): say so loudly
        raise SystemExit(f"blocked packages were imported anyway: {leaked}")


if __name__ == "__main__":
    main()
