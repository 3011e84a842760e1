"""Cost estimates of LLM calls from list prices (USD per million tokens)."""

from __future__ import annotations

import json
import os

#: List prices in USD per million tokens (input, output) of OpenAI API models, 2025.
#: Used for cost estimates only; ``FLNAS_LLM_PRICES='{"model": [in, out]}'`` adds or
#: overrides entries (e.g. for a paid OpenAI-compatible endpoint).
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.0),
    "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.0, 8.0),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}


def _prices() -> dict[str, tuple[float, float]]:
    prices = dict(PRICES_PER_MTOK)
    raw = os.environ.get("FLNAS_LLM_PRICES")
    if raw:
        try:
            prices.update({k: (float(v[0]), float(v[1])) for k, v in json.loads(raw).items()})
        except (ValueError, TypeError, IndexError, AttributeError):
            pass  # a malformed override only loses the estimate, never the run
    return prices


def price_of(model: str | None) -> tuple[float, float] | None:
    """Return the (input, output) USD price per million tokens of a model label, if known.

    ``openai:gpt-4.1`` and dated snapshots (``gpt-4.1-2025-04-14``) match ``gpt-4.1``;
    other labels (``URL:model``) match only entries of ``FLNAS_LLM_PRICES``.
    """
    if not model:
        return None
    prices = _prices()
    name = model[len("openai:"):] if model.startswith("openai:") else model
    if name in prices:
        return prices[name]
    if model.startswith("openai:"):
        # Longest matching prefix, so gpt-4.1-mini-2025-04-14 is not priced as gpt-4.1.
        hits = [k for k in prices if name.startswith(k + "-")]
        if hits:
            return prices[max(hits, key=len)]
    return None


def estimate_cost(model: str | None, input_tokens: int, output_tokens: int) -> float | None:
    """Estimated USD cost of one request, or None when the model's price is unknown."""
    price = price_of(model)
    if price is None:
        return None
    return round((input_tokens * price[0] + output_tokens * price[1]) / 1e6, 6)

