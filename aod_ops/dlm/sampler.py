"""The masked-diffusion sampler, in the manner of LLaDA's ``generate``.

Start from masks, predict every masked position at once, commit the most confident predictions
and leave the rest masked for the next step. Masked positions are filled block by block from left
to right (semi-autoregressive blocks of ``block_length`` masks: in a skeleton the literal text
between slots belongs to no block), each block in an equal share of ``steps``. Temperature
samples (top-k, through Gumbel noise, one random stream per record); zero is greedy.
``vocab_class`` picks, per position, a row of ``class_masks`` that says which tokens are legal
there (digits in a number slot, no quote inside a string), and an optional
``ordered`` hook commits the positions it owns left to right (slots with legal values), up to
``SamplerSettings.per_step`` of a slot at a step (LLaDA's tokens per step, ``block_length /
steps``). ``sequential`` positions (free-text slots under ``order: left_to_right``, guided or
not) are written one token a step from the left, as the model's adapter reads text (position
i-1 predicts token i); the free runs are still interleaved by confidence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from aod_ops.dlm.denoiser import Denoiser, PromptState, RecordCache
from aod_ops.dlm.settings import SamplerSettings

TOP_K = 64

# Called once per forward pass with (logits [N, V], rows [N], cols [N], ids [B, L]) for the N
# positions the step decides (among them the first masks of every span the hook owns: one of a
# sequential span, ``per_step`` of another); commits in ``ids``, in place, at least the leftmost
# masked position of every span, so it always makes progress.
OrderedHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]


def sample(
    logits: torch.Tensor, rows: torch.Tensor, temperature: float, generators: list[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids drawn from ``softmax(logits / temperature)`` (top-k) and their probabilities.

    ``logits`` is ``[N, V]``; entry n belongs to batch row ``rows[n]`` and draws its noise from
    that row's generator, so a record's draw does not depend on its neighbours.
    """
    top_logits, top_ids = logits.topk(min(TOP_K, logits.shape[-1]), dim=-1)
    if temperature > 0:
        noise = torch.empty_like(top_logits)
        for row in rows.unique().tolist():
            sel = rows == row
            # Drawn on the CPU (a record's stream is the same on every device), used on the logits'.
            uniform = torch.rand(
                (int(sel.sum()), top_logits.shape[1]), generator=generators[row], device="cpu"
            )
            noise[sel] = -torch.log(-torch.log(uniform.clamp_min(1e-20))).to(noise.device)
        index = (top_logits / temperature + noise).argmax(-1)
    else:
        index = torch.zeros(len(rows), dtype=torch.long, device=logits.device)
    choice = top_ids.gather(-1, index[:, None])[:, 0]
    prob = (top_logits.gather(-1, index[:, None])[:, 0] - torch.logsumexp(logits, -1)).exp()
    return choice, prob


def constrained_logits(
    denoiser: Denoiser,
    ids: torch.Tensor,
    attention: torch.Tensor,
    where: torch.Tensor,
    vocab_class: torch.Tensor | None,
    class_masks: torch.Tensor | None,
    prompt: PromptState,
    cache: RecordCache | None = None,
) -> torch.Tensor:
    """Logits at the ``where`` positions with the tokens illegal there set to minus infinity."""
    logits = denoiser.logits(ids, attention, where, prompt, cache)
    logits[:, denoiser.mask_id] = float("-inf")  # committing a mask would never finish
    if vocab_class is not None and class_masks is not None:
        rows, cols = where.nonzero(as_tuple=True)
        logits = logits.masked_fill(~class_masks[vocab_class[rows, cols]], float("-inf"))
    return logits


def denoise(
    denoiser: Denoiser,
    prompt: PromptState,
    ids: torch.Tensor,
    attention: torch.Tensor,
    settings: SamplerSettings,
    generators: list[torch.Generator],
    vocab_class: torch.Tensor | None = None,
    class_masks: torch.Tensor | None = None,
    ordered: tuple[torch.Tensor, OrderedHook] | None = None,
    sequential: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fill every mask in ``ids`` (``[B, L]``, the tokens after ``prompt``); return the filled ids.

    ``ordered`` is ``(positions, hook)``: the ``[B, L]`` bool positions the hook commits itself;
    the confidence rule fills the others. ``sequential`` (``[B, L]`` bool, runs of positions)
    lets a step commit only the leftmost mask of each run (the hook's runs too); an end-of-text
    committed there ends the run. A block then takes the steps its runs need beyond its share.
    With ``settings.cache`` only the first pass is a full one;
    every later pass recomputes the positions it decides and the tokens committed since the pass
    before, and a block's first step also every masked position (``RecordCache``). The literal
    text of a skeleton is computed once.
    """
    ids = ids.clone()
    batch = ids.shape[0]
    owned = ordered[0] if ordered is not None else torch.zeros_like(ids, dtype=torch.bool)
    free = (ids == denoiser.mask_id) & ~owned
    # Each record's free masks, left to right, in blocks of block_length masks: the literal text
    # between them makes no block and costs no step.
    block_of = torch.where(free, (free.cumsum(1) - 1) // settings.block_length, -1)
    done = int(block_of.max()) + 1 if free.any() else 0  # past every record's last block
    steps_per_block = (settings.steps // (block_of.max(1).values + 1).clamp_min(1)).clamp_min(1)
    current = torch.full((batch,), -1, device=ids.device)
    step = torch.zeros(batch, dtype=torch.long, device=ids.device)
    per_step = settings.per_step
    cache = RecordCache() if settings.cache else None
    refreshed = ids  # the tokens when the cache was last written
    while (masked := ids == denoiser.mask_id).any():
        free = masked & ~owned
        lowest = torch.where(free, block_of, done).min(1).values
        step[lowest != current] = 0  # a record that moved on to its next block starts it afresh
        current = lowest
        in_block = block_of == current[:, None]
        ready = free & in_block
        hooked = _first(masked & owned, per_step)
        if sequential is not None:
            ready &= ~_behind(masked & sequential)
            hooked &= ~_behind(masked & sequential)
        # Logits are needed where this step decides: the current block's free masks that may be
        # committed and the first masks of each span the hook owns.
        where = hooked | ready
        if not where.any():
            raise RuntimeError("sampler made no progress")  # a hook that broke its contract
        if cache is not None:
            if cache.layers is not None:  # after the first pass, a full one
                live = (ids != refreshed) | where
                # A block's first step (and every step once only hooked slots are left)
                # refreshes every mask of the record.
                live |= masked & ((step == 0) | (current == done))[:, None]
                cache.window = live
            refreshed = ids.clone()
        logits = constrained_logits(denoiser, ids, attention, where, vocab_class, class_masks, prompt, cache)
        rows, cols = where.nonzero(as_tuple=True)
        if ordered is not None:
            ordered[1](logits, rows, cols, ids)
        candidates = ready[rows, cols]
        if candidates.any():
            choice, prob = sample(logits, rows, settings.temperature, generators)
            remaining = (steps_per_block - step).clamp_min(1)
            left = (free & in_block).sum(1)
            for row in rows[candidates].unique().tolist():
                sel = (candidates & (rows == row)).nonzero()[:, 0]
                # Spread the block's masks evenly over its steps (a sequential run's later masks wait).
                take = min(len(sel), -(-int(left[row]) // int(remaining[row])))
                best = sel[prob[sel].topk(take).indices]
                ids[row, cols[best]] = choice[best]
                if sequential is not None:
                    _end_runs(ids, row, cols[best], sequential, denoiser)
        step += 1
    return ids


def _first(positions: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` positions of each run of set positions in every row (``[B, L]`` bool)."""
    start = positions.clone()
    start[:, 1:] &= ~positions[:, :-1]
    count = positions.long().cumsum(1)
    before = torch.cummax(torch.where(start, count - 1, 0), dim=1).values  # set before the run
    return positions & (count - before <= n)


def _behind(positions: torch.Tensor) -> torch.Tensor:
    """The set positions that are not the first of their run."""
    return positions & ~_first(positions, 1)


def _end_runs(
    ids: torch.Tensor, row: int, cols: torch.Tensor, sequential: torch.Tensor, denoiser: Denoiser
) -> None:
    """Fill the rest of a sequential run with end-of-text where one was just committed."""
    for col in cols[(ids[row, cols] == denoiser.eos_id) & sequential[row, cols]].tolist():
        end = col + 1
        while end < ids.shape[1] and sequential[row, end] and ids[row, end] == denoiser.mask_id:
            end += 1
        ids[row, col + 1 : end] = denoiser.eos_id
