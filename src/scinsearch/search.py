"""Search the database by photo, by stored image or by text, with filters and condition suggestions.

`Searcher` loads the model and opens the store once and then answers many queries (the CLI runs one,
the service thousands). A photo is decoded and preprocessed by the same code that indexed SCIN (EXIF
orientation included) and stays in memory; a stored image reuses its stored vector; text goes through
the SigLIP text tower, padded to 64 tokens as the model was trained. A collection made by `scinsearch
finetune apply` holds adapted vectors: its queries go through the same adapter (`settings.adapter`).

    with Searcher.open(settings) as searcher:
        result = searcher.search_image(Path("photo.jpg"), SearchFilters(fitzpatrick="5,6"), SearchOptions(top_k=5))
        print(result.to_dict())
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from scinsearch import quality, referral, rules, schema, suggest
from scinsearch.calibration import calibration_of, suggestion_neighbours
from scinsearch.errors import BAD_FILTER, EMPTY_TEXT, NOT_FOUND, ScinSearchError
from scinsearch.images import ImageError
from scinsearch.photo_worker import PreparedPhoto, prepare_photo
from scinsearch.preprocessing import collate
from scinsearch.results import Neighbour, SearchResult, ZeroShot
from scinsearch.schema import BODY_PARTS, point_id_for
from scinsearch.search_filters import LABELLED_ONLY, SearchFilters, SearchOptions
from scinsearch.settings import Settings
from scinsearch.store import Filter, Match, check_model, open_store, require_collection
from scinsearch.vectors.adapter import query_adapter

OVERFETCH = 4  # images fetched per wanted case before grouping (a case has up to 3 images)
MAX_FETCH = 4096
ZERO_SHOT_SHOWN = 5
ImageInput = Path | str | bytes | Image.Image


class Searcher:
    """One loaded model and one open store, answering queries until `close()`.

    `embedder` and `store` may be injected (tests, the service); otherwise they are built from
    `settings`, the embedder with the preprocessing the collection records. Either way the collection
    must have been made with the same model. The collection's calibration (`scinsearch calibrate`), when it
    has one, sets the suggestion thresholds of photo and stored-image queries and the quality checks that
    need it; `suggestion_options` overrides the thresholds (for experiments). Every suggestion is drawn from
    the same number of neighbouring cases (`neighbours`: the calibrated one, else `suggest.NEIGHBOURS`),
    whatever number of cases a query lists."""

    def __init__(self, settings: Settings, embedder=None, store=None, suggestion_options: dict | None = None):
        self.settings = settings
        self._owns_store = store is None
        self.store = store if store is not None else open_store(settings)
        try:
            collection = require_collection(self.store)  # missing, or another model: fails before the slow load
            self.adapter = query_adapter(settings.adapter, collection, self.store.name)  # so does a wrong adapter
            if embedder is None:
                from scinsearch.embedding import Embedder

                check_model(self.store, settings.model)
                embedder = Embedder.from_settings(settings, collection)
            self.embedder = embedder
            self.info = check_model(self.store, embedder.model_name, embedder.dim)
            self.calibration = calibration_of(self.info)  # another model's record is refused here
            self.neighbours = suggestion_neighbours(self.calibration)
        except BaseException:
            self.close()
            raise
        self.suggestion_options = dict(suggestion_options or {})
        self._conditions: list[str] | None = None
        self._condition_vectors: np.ndarray | None = None

    @classmethod
    def open(cls, settings: Settings) -> Searcher:
        return cls(settings)

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Release the store (the embedded one allows one process at a time) if this searcher opened it."""
        if self._owns_store and self.store is not None:
            self.store.close()
        self.store = None

    # Queries -----------------------------------------------------------------------------------

    def search_image(
        self,
        image: ImageInput,
        filters: SearchFilters | None = None,
        options: SearchOptions | None = None,
        zero_shot: bool = False,
    ) -> SearchResult:
        """Cases like a photo (a path, encoded bytes or a PIL image), decoded in memory only, with the
        photo's quality checks (`result.quality`)."""
        return self.search_prepared(self.prepare_photo(image), filters, options, zero_shot)

    def search_prepared(
        self,
        photo: PreparedPhoto,
        filters: SearchFilters | None = None,
        options: SearchOptions | None = None,
        zero_shot: bool = False,
    ) -> SearchResult:
        """`search_image` for a photo already decoded and preprocessed (`prepare_photo`)."""
        vector = self.embedder.embed_batch(collate([photo.arrays]))[0]
        checks = list(photo.checks)
        query = self.adapter.transform(vector) if self.adapter else vector
        result = self.search_vector(query, {"kind": "image"}, filters, options)
        probe = self.calibration.probe if self.calibration is not None else None
        gradable = float(probe.probability(query)[0]) if probe is not None else None  # the stored vectors' space
        checks += [quality.gradability_check(gradable), self.similarity_check(result, filters)]
        result.quality = quality.QualityReport(checks)
        self.abstain_when_nothing_alike(result)
        if zero_shot:
            result.zero_shot = self.zero_shot(vector)  # the base model's calibrated scores, not the adapter's
        return result

    def search_text(
        self,
        text: str,
        filters: SearchFilters | None = None,
        options: SearchOptions | None = None,
    ) -> SearchResult:
        """Cases whose photos match a description, through the SigLIP text tower."""
        if not isinstance(text, str) or not rules.has_visible_text(text):
            raise ScinSearchError(
                "empty text query (nothing but spaces, control or invisible characters): "
                "describe what the skin looks like",
                EMPTY_TEXT,
            )
        if len(text) > rules.MAX_TEXT_CHARS:
            raise ScinSearchError(f"text query is {len(text)} characters long (limit {rules.MAX_TEXT_CHARS})")
        vector = self.embedder.embed_texts([text.strip()])[0]
        vector = self.adapter.transform_text(vector) if self.adapter else vector
        return self.search_vector(vector, {"kind": "text", "text": text.strip()}, filters, options)

    def search_like(
        self,
        image_id: str,
        filters: SearchFilters | None = None,
        options: SearchOptions | None = None,
        exclude_same_case: bool = True,
        zero_shot: bool = False,
    ) -> SearchResult:
        """Cases like a stored image, reusing its stored vector (nothing is re-embedded). The image
        itself is never a result; with `exclude_same_case`, neither are the other photos of its case(s)."""
        if zero_shot and self.adapter is not None:
            raise ScinSearchError(
                "zero-shot scores need the base model's vector, and this collection stores adapted ones: use "
                "zero-shot with a photo, or search the original collection"
            )
        point = self.stored_point(image_id)  # its vector is already adapted when the collection is
        case_ids = schema.case_ids(point.payload)
        exclude = Filter(must_not=(Match("image_id", (str(point.payload.get("image_id", image_id)),)),))
        if exclude_same_case and case_ids:
            exclude = exclude.and_(Filter(must_not=(Match("case_ids", tuple(case_ids)),)))
        query = {"kind": "like", "image_id": image_id, "case_ids": case_ids, "exclude_same_case": exclude_same_case}
        result = self.search_vector(point.vector, query, filters, options, extra=exclude)
        result.quality = quality.QualityReport([self.similarity_check(result, filters)])
        self.abstain_when_nothing_alike(result)
        if zero_shot:
            result.zero_shot = self.zero_shot(point.vector)
        return result

    def get_image(self, image_id: str) -> dict[str, Any] | None:
        """The stored payload of an image, or None when the collection does not hold it."""
        points = self.store.retrieve([point_id_for(str(image_id))])
        return points[0].payload if points else None

    def get_case(self, case_id: str) -> list[dict[str, Any]]:
        """Payloads of every stored image of a case (shared images included), in photo order."""
        points = self.store.scroll(Filter(must=(Match("case_ids", (str(case_id),)),)))
        return sorted((p.payload for p in points), key=lambda p: (p.get("image_index") or 0, str(p.get("image_id"))))

    # The shared path ------------------------------------------------------------------------------

    def search_vector(
        self,
        vector: np.ndarray,
        query: dict,
        filters: SearchFilters | None = None,
        options: SearchOptions | None = None,
        extra: Filter | None = None,
    ) -> SearchResult:
        """Nearest stored images to a query vector, grouped per case, with suggestions from them (by the
        thresholds in force for `query["kind"]`)."""
        filters, options = filters or SearchFilters(), options or SearchOptions()
        store_filter = filters.to_store_filter().and_(extra)
        neighbours = self.nearest(vector, store_filter, options)
        if not neighbours and filters:
            self.check_free_text_filters(filters)
        if self.adapter is not None:
            query = {**query, "adapter": self.adapter.id}
        query = {**query, **options.to_dict(), "filters": filters.to_dict()}
        pool = self.suggestion_pool(vector, neighbours, filters, options, extra)
        thresholds, source = self.suggestion_thresholds(query.get("kind"))
        suggestions = suggest.suggest_conditions([(n.score, n.weighted_labels) for n in pool], **thresholds)
        suggestions.thresholds_source = source
        if source == "off":
            suggestions.abstain(suggest.SUGGESTIONS_OFF)
        refer = referral.referral([n.weighted_labels for n in pool])
        return SearchResult(
            query, neighbours, suggestions, model=self.info.model, collection=self.store.name, refer=refer
        )

    def suggestion_pool(
        self,
        vector: np.ndarray,
        listed: list[Neighbour],
        filters: SearchFilters,
        options: SearchOptions,
        extra: Filter | None,
    ) -> list[Neighbour]:
        """The cases a suggestion is drawn from, by one rule whatever is listed: the `neighbours` most
        similar labelled cases (one per case) that match the query's filters, as calibration measured them.
        The listed cases are reused when they are exactly those; otherwise they are fetched."""
        if getattr(filters, LABELLED_ONLY) and options.per_case and len(listed) >= self.neighbours:
            return listed[: self.neighbours]
        labelled = dataclasses.replace(filters, **{LABELLED_ONLY: True})
        wanted = SearchOptions(self.neighbours, options.min_score, per_case=True)
        return self.nearest(vector, labelled.to_store_filter().and_(extra), wanted)

    def suggestion_thresholds(self, kind: str | None) -> tuple[dict, str]:
        """The suggestion thresholds for a kind of query, and where they come from: a text query's
        similarities are on another scale (`suggest.TEXT_MIN_SIMILARITY`) and keeps the defaults; image
        queries use the collection's calibration when it has one. When calibration turned suggestions off,
        every query keeps the defaults for its ranking (source "off") and abstains (`search_vector`)."""
        defaults = {"min_similarity": suggest.TEXT_MIN_SIMILARITY} if kind == "text" else {}
        if self.calibration is not None and self.calibration.suggestions_off:
            options, source = defaults, "off"
        elif self.calibration is not None and kind != "text":
            options, source = self.calibration.suggestion_options(), "calibrated"
        else:
            options, source = defaults, "default"
        if self.suggestion_options:
            options, source = {**options, **self.suggestion_options}, "given"
        return options, source

    def similarity_check(self, result: SearchResult, filters: SearchFilters | None) -> quality.QualityCheck:
        """The best match against the collection's "nothing alike" cut."""
        best = result.results[0].score if result.results else None
        cut = self.calibration.cut if self.calibration is not None else None
        return quality.similarity_check(best, cut, filtered=bool(filters))

    @staticmethod
    def abstain_when_nothing_alike(result: SearchResult) -> None:
        """No suggestion from cases that do not look alike; the cases themselves stay viewable."""
        check = result.quality.get("similarity") if result.quality is not None else None
        if result.suggestions.reason == suggest.SUGGESTIONS_OFF:
            return  # the collection-wide reason stays the one shown
        if check is not None and check.verdict == quality.WARN:
            result.suggestions.abstain(
                f"{suggest.NOTHING_ALIKE} (best similarity {check.value:.2f}, below the collection's "
                f"cut {check.threshold:.2f})"
            )

    def nearest(self, vector: np.ndarray, store_filter: Filter, options: SearchOptions) -> list[Neighbour]:
        """The top_k images, or with `per_case` the best image of each of the top_k cases: over-fetch,
        group, and fetch more only when the cases are not filled yet and more images exist."""
        top_k, per_case = options.top_k, options.per_case
        limit = top_k * OVERFETCH if per_case else top_k
        while True:
            hits = self.store.query(vector, limit=limit, filter=store_filter or None, min_score=options.min_score)
            neighbours = [Neighbour.from_hit(hit) for hit in hits]
            if not per_case:
                return neighbours[:top_k]
            grouped = one_per_case(neighbours)
            if len(grouped) >= top_k or len(hits) < limit or limit >= MAX_FETCH:
                return grouped[:top_k]
            limit = min(limit * OVERFETCH, MAX_FETCH)

    def embed_query_image(self, image: ImageInput) -> np.ndarray:
        image = checked_image_input(image)
        try:
            return self.embedder.embed_images([image])[0]
        except ImageError as exc:
            raise exc.user_error() from None

    def prepare_photo(self, image: ImageInput) -> PreparedPhoto:
        """The photo decoded once, in memory, preprocessed as the embedder's preprocessing would (a JPEG
        may be decoded at a reduced scale), with its photo checks. The service does this in its photo
        decoder process (`photo_worker.PhotoDecoder`) and calls `search_prepared`."""
        image = checked_image_input(image)
        try:
            return prepare_photo(self.embedder.preprocessor, image)
        except ImageError as exc:
            raise exc.user_error() from None

    def stored_point(self, image_id: str):
        if not isinstance(image_id, str) or not image_id.strip():
            raise ScinSearchError("empty image id")
        points = self.store.retrieve([point_id_for(image_id.strip())], with_vectors=True)
        if not points or points[0].vector is None:
            raise ScinSearchError(
                f"unknown image id {image_id!r}: collection {self.store.name!r} holds no such image", NOT_FOUND
            )
        return points[0]

    def check_free_text_filters(self, filters: SearchFilters) -> None:
        """An empty result may come from a condition or body part that no stored case has: say so."""
        for what, field, value in filters.free_text():
            if self.store.count(Filter(must=(Match(field, (value,)),))) == 0:
                known = self.known_conditions() if what == "condition" else list(BODY_PARTS)
                close = difflib.get_close_matches(value, known, n=3, cutoff=0.5) or [
                    k for k in known if k.lower() == value.lower()
                ]
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise ScinSearchError(f"no stored case has the {what} {value!r}{hint}", BAD_FILTER)

    # Zero-shot ------------------------------------------------------------------------------------

    def known_conditions(self) -> list[str]:
        """Every condition name among the stored dermatologist labels (collected once, lazily)."""
        if self._conditions is None:
            names: set[str] = set()
            for point in self.store.scroll():
                names.update(str(n) for n in (point.payload.get("weighted_labels") or {}))
                if point.payload.get("condition"):
                    names.add(str(point.payload["condition"]))
            self._conditions = sorted(names)
        return self._conditions

    def zero_shot(self, image_vector: np.ndarray, shown: int = ZERO_SHOT_SHOWN) -> ZeroShot | None:
        """SigLIP's sigmoid scores of `rules.ZERO_SHOT_PROMPT` for each of the collection's conditions."""
        conditions = self.known_conditions()
        if not conditions or not hasattr(self.embedder, "zero_shot_logits"):
            return None
        if self._condition_vectors is None:
            prompts = [rules.ZERO_SHOT_PROMPT.format(condition=name) for name in conditions]
            self._condition_vectors = self.embedder.embed_texts(prompts)
        with torch.no_grad():  # reading logit_scale/bias off a trainable parameter must not track gradients
            logits = self.embedder.zero_shot_logits(np.asarray(image_vector)[None, :], self._condition_vectors)[0]
        probabilities = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
        order = np.argsort(-probabilities)[:shown]
        return ZeroShot(rules.ZERO_SHOT_PROMPT, [(conditions[i], float(probabilities[i])) for i in order])


def checked_image_input(image: ImageInput) -> Path | bytes | Image.Image:
    if isinstance(image, str):
        image = Path(image).expanduser()
    if isinstance(image, bytearray):
        image = bytes(image)
    if not isinstance(image, (Path, bytes, Image.Image)):
        raise ScinSearchError(f"query image must be a path, bytes or a PIL image, not {type(image).__name__}")
    return image


def one_per_case(neighbours: Sequence[Neighbour]) -> list[Neighbour]:
    """The best image of each case, in score order (`rules.one_per_case`: a shared image stands for all
    its cases, so a case is never shown twice)."""
    cases = [n.case_ids or [n.case_id or n.image_id] for n in neighbours]
    return [neighbours[i] for i in rules.one_per_case(cases)]
