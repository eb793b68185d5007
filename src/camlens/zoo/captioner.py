"""digits-captioner: read a multi-digit scene and write its digits left to right.

A convolutional encoder makes a spatial feature map (``encoder``: the digits-gap trunk, 128
channels at a quarter of the input's resolution, 16x32 for a 64x128 scene; training starts from
digits-gap's weights and keeps them fixed, as captioning models start from a pretrained CNN); a GRU
decoder with additive attention over the map's positions (Bahdanau et al. 2015, as in Show,
Attend and Tell) emits one digit per step and then the end token.

``forward(images, tokens)`` scores a given token sequence under teacher forcing and returns the
logits ``(B, T, V)`` of the next token at each step (``tokens`` start with :data:`START`), which
is what :class:`camlens.captioning.CaptionTarget` explains. :meth:`DigitsCaptioner.generate`
decodes greedily or with a beam.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from camlens.zoo.digits import digits_trunk
from camlens.zoo.module import ZooModule

__all__ = ["DIGITS", "DigitsCaptioner", "END", "MAX_TOKENS", "START", "VOCABULARY",
           "teacher_forcing_tokens"]

DIGITS = 10
END = 10
START = 11
VOCABULARY = tuple(str(d) for d in range(DIGITS)) + ("<end>", "<start>")
MAX_TOKENS = 5  # up to four digits, then <end>


class DigitsCaptioner(ZooModule):
    """Conv encoder (spatial features) -> attention GRU decoder over digit tokens."""

    #: Where per-word maps point best at their own digit: the end of the encoder's second block
    #: (32 channels, 16x32), where LayerCAM's word maps peak inside their digit's box for 96%
    #: of words against 73% at the encoder's last layer (``camlens reproduce captioning``).
    #: ``camlens caption`` explains there by default.
    word_layer = "encoder.7"

    def __init__(self, channels: int = 128, hidden: int = 128, embedding: int = 32,
                 grid: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        self.encoder = digits_trunk()
        self.embed = nn.Embedding(len(VOCABULARY), embedding)
        self.init_state = nn.Linear(channels, hidden)
        self.attend_features = nn.Linear(channels, hidden)
        # Where each position is, so attention can move left to right step by step.
        self.position = nn.Parameter(torch.zeros(1, grid[0] * grid[1], hidden))
        self.attend_state = nn.Linear(hidden, hidden)
        self.attend_score = nn.Linear(hidden, 1)
        self.cell = nn.GRUCell(embedding + channels, hidden)
        self.output = nn.Linear(hidden + channels, len(VOCABULARY))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Positions ``(B, P, C)`` of the encoder's feature map."""
        return self.encoder(images).flatten(2).transpose(1, 2)

    def step(self, features, keys, state, token):
        """One decoder step: attention over positions, GRU update, next-token logits."""
        scores = self.attend_score(torch.tanh(keys + self.attend_state(state)[:, None]))
        weights = scores.softmax(dim=1)  # (B, P, 1)
        context = (weights * features).sum(dim=1)
        state = self.cell(torch.cat([self.embed(token), context], dim=1), state)
        return self.output(torch.cat([state, context], dim=1)), state, weights[..., 0]

    def attention_keys(self, features: torch.Tensor) -> torch.Tensor:
        keys = self.attend_features(features)
        if keys.shape[1] == self.position.shape[1]:
            keys = keys + self.position
        return keys

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, V)``: at step t, of the token after ``tokens[:, :t + 1]``."""
        return self.decode(self.encode(images), tokens)

    def decode(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits from encoder positions ``(B, P, C)``."""
        keys = self.attention_keys(features)
        state = torch.tanh(self.init_state(features.mean(dim=1)))
        logits = []
        for position in range(tokens.shape[1]):
            step_logits, state, _ = self.step(features, keys, state, tokens[:, position])
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    @torch.no_grad()
    def attention(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The decoder's own attention ``(B, T, h, w)`` over the encoder's grid, teacher-forced
        with ``tokens``: at step t, the weights that made the logits of the token after
        ``tokens[:, :t + 1]`` (each map sums to 1)."""
        features = self.encoder(images)
        height, width = features.shape[-2:]
        features = features.flatten(2).transpose(1, 2)
        keys = self.attention_keys(features)
        state = torch.tanh(self.init_state(features.mean(dim=1)))
        weights = []
        for position in range(tokens.shape[1]):
            _, state, step_weights = self.step(features, keys, state, tokens[:, position])
            weights.append(step_weights)
        return torch.stack(weights, dim=1).reshape(images.shape[0], tokens.shape[1], height,
                                                   width)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, beam_size: int = 1,
                 max_tokens: int = MAX_TOKENS) -> list[list[int]]:
        """Digit sequences (without the end token), greedy (beam_size=1) or by beam search."""
        if beam_size == 1:
            return self.greedy(images, max_tokens)
        return [self.beam_search(image[None], beam_size, max_tokens) for image in images]

    def greedy(self, images: torch.Tensor, max_tokens: int) -> list[list[int]]:
        """The most likely token at each step, for the whole batch at once."""
        features = self.encode(images)
        keys = self.attention_keys(features)
        state = torch.tanh(self.init_state(features.mean(dim=1)))
        token = torch.full((images.shape[0],), START, dtype=torch.long, device=images.device)
        steps = []
        for _ in range(max_tokens):
            logits, state, _ = self.step(features, keys, state, token)
            token = logits[:, :START].argmax(dim=1)
            steps.append(token)
        captions = []
        for row in torch.stack(steps, dim=1).tolist():
            words = row[: row.index(END)] if END in row else row
            captions.append(words)
        return captions

    def beam_search(self, image: torch.Tensor, beam_size: int, max_tokens: int) -> list[int]:
        features = self.encode(image)
        keys = self.attention_keys(features)
        state = torch.tanh(self.init_state(features.mean(dim=1)))
        beams = [(0.0, [START], state)]  # (log-probability, tokens, decoder state)
        finished: list[tuple[float, list[int]]] = []
        for _ in range(max_tokens):
            candidates = []
            for logprob, tokens, beam_state in beams:
                last = torch.tensor([tokens[-1]], device=image.device)
                logits, next_state, _ = self.step(features, keys, beam_state, last)
                step_logprobs = F.log_softmax(logits[0, :START], dim=0)  # never <start>
                top = step_logprobs.topk(beam_size)
                for value, token in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                    candidates.append((logprob + value, tokens + [token], next_state))
            candidates.sort(key=lambda item: item[0], reverse=True)
            beams = []
            for logprob, tokens, beam_state in candidates[:beam_size]:
                if tokens[-1] == END:
                    finished.append((logprob, tokens))
                else:
                    beams.append((logprob, tokens, beam_state))
            if not beams:
                break
        finished.extend((logprob, tokens) for logprob, tokens, _ in beams)
        best = max(finished, key=lambda item: item[0])[1]
        return [token for token in best[1:] if token < DIGITS]


def teacher_forcing_tokens(captions: torch.Tensor, counts: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoder inputs, targets), both ``(B, MAX_TOKENS)``, from left-to-right digit captions
    ``(B, 4)`` padded with -1: inputs are <start> then the digits, targets the digits then
    <end>, padded with -1 past the end."""
    batch = captions.shape[0]
    targets = torch.full((batch, MAX_TOKENS), -1, dtype=torch.long)
    inputs = torch.full((batch, MAX_TOKENS), END, dtype=torch.long)
    inputs[:, 0] = START
    for row in range(batch):
        count = int(counts[row])
        targets[row, :count] = captions[row, :count]
        targets[row, count] = END
        inputs[row, 1 : count + 1] = captions[row, :count]
    return inputs, targets
