"""Re-embed without downtime: `embed --alias NAME` (a Qdrant server, or qdrant-client's local mode).

Each run embeds into a versioned collection `NAME_v<n>` while readers keep using `NAME`, an alias of
the previous version. When the run has finished and the new version passes its checks (the record,
the count, every sampled image finds itself), one `update_collection_aliases` request moves the alias:
readers see the old collection or the new one, never a half-built one. The previous version is kept
until the user deletes it; `scinsearch info` lists the versions. An interrupted run leaves its version
unaliased, and the next run with the same model resumes it.
"""

from __future__ import annotations

import re

from scinsearch.errors import ScinSearchError
from scinsearch.store import VectorStore

SELF_CHECKS = 16  # sampled points that must find themselves before the alias moves


def versioned(alias: str, number: int) -> str:
    return f"{alias}_v{number}"


def versions(collection_names: list[str], alias: str) -> list[tuple[int, str]]:
    """The version collections of `alias` (`alias_v1`, `alias_v2`, ...), oldest first."""
    pattern = re.compile(re.escape(alias) + r"_v(\d+)")
    found = [(int(match.group(1)), name) for name in collection_names if (match := pattern.fullmatch(name))]
    return sorted(found)


def require_aliases(store: VectorStore):
    """Aliases are a Qdrant server's (and qdrant-client's) feature; the embedded Edge store has none."""
    if not hasattr(store, "switch_alias"):
        raise ScinSearchError(
            "--alias needs a Qdrant server (--qdrant-url): the embedded Qdrant Edge store has no aliases"
        )
    return store


def choose_version(store, alias: str, model: str, dim: int, preprocessing: str, recreate: bool) -> str:
    """The newest version when it is not live yet and was made the same way (resume it, or start it over
    with `recreate`); otherwise the next version number. The live version is never written to."""
    names = store.collection_names()
    if alias in names:
        raise ScinSearchError(
            f"{alias!r} is a collection, not an alias: give --alias another name, or copy it into "
            f"{versioned(alias, 1)} (`scinsearch export --to-collection {versioned(alias, 1)}`) and delete it first"
        )
    existing = versions(names, alias)
    if existing:
        number, newest = existing[-1]
        if newest != store.aliases().get(alias):
            info = store.sibling(newest).info()
            if recreate or (
                info is not None and (info.model, info.dim, info.preprocessing) == (model, dim, preprocessing)
            ):
                return newest
    return versioned(alias, existing[-1][0] + 1 if existing else 1)


def embed_into_alias(data, embedder, store: VectorStore, alias: str, recreate: bool = False, **run_options):
    """Embed `data` into a new (or the unfinished) version of `alias`, check it, then switch the alias.

    Returns (the run's `EmbedSummary`, the version now live, the version that was live before or None)."""
    from scinsearch.pipeline import run_embed

    store = require_aliases(store)
    model, dim, preprocessing = embedder.model_name, embedder.dim, embedder.preprocessor.mode
    version = choose_version(store, alias, model, dim, preprocessing, recreate)
    target = store.sibling(version)
    summary = run_embed(data, embedder, target, recreate=recreate, **run_options)
    check_version(target, summary.embedded + summary.already_present, model, dim)
    previous = store.aliases().get(alias)
    store.switch_alias(alias, version)
    return summary, version, previous


def check_version(target: VectorStore, expected: int, model: str, dim: int) -> None:
    """What must hold before readers are moved to `target`; else one line, and the alias stays."""
    keep = f"the alias was not moved ({target.name} is kept: run again to resume it)"
    info = target.info()
    if info is None or not info.same_space(model, dim):
        raise ScinSearchError(f"verification failed: {target.name} does not record {model} ({dim}-d); {keep}")
    found = target.count()
    if found == 0 or found != expected:
        raise ScinSearchError(f"verification failed: {target.name} holds {found} points, {expected} expected; {keep}")
    step = max(1, found // SELF_CHECKS)
    for index, point in enumerate(target.scroll(with_vectors=True)):
        if index // step >= SELF_CHECKS:
            break
        if index % step:
            continue
        top = target.query(point.vector, limit=1)
        if not top or top[0].score < 0.999:
            raise ScinSearchError(
                f"verification failed: point {point.id} does not find itself in {target.name}; {keep}"
            )


def version_lines(store: VectorStore, name: str) -> list[str]:
    """For `scinsearch info`: the alias `name`, where it points, and every version with its size and model."""
    if not hasattr(store, "aliases"):
        return []
    names = store.collection_names()
    found = versions(names, name)
    live = store.aliases().get(name)
    if not found and live is None:
        return []
    lines = [f"alias {name!r} -> {live}" if live else f"alias {name!r} is not set yet (no run has finished)"]
    lines.append("versions (* = live; the others are kept until you delete them):")
    for _, version in found:
        collection = store.sibling(version)
        info = collection.info()
        made = f"{info.model} ({info.dim}-d)" if info else "not made by scinsearch"
        lines.append(f"  {'*' if version == live else ' '} {version}: {collection.count()} points, {made}")
    if live and live not in {version for _, version in found}:
        lines.append(f"  * {live} (not a numbered version)")
    return lines
