"""Attention of queries over a SequenceBatch of keys, and the encoder-decoder built on it.

:class:`Attention` scores each query against the keys of its sequence (Luong's ``'dot'`` and
``'general'``, Bahdanau's ``'additive'``), never against padding. :class:`G2PModel`, after
Luong et al. (2015), "Effective approaches to attention-based neural machine translation", as
used for grapheme to phoneme by Yao & Zweig (2015):

* encoder: the letters' embeddings through a :class:`~rnnkit.Bidirectional` LSTM;
* decoder: an LSTM run by :class:`~rnnkit.RecurrenceFrom` from a state made of the encoder's
  ends (teacher forcing: its inputs are the reference phonemes shifted by one, after ``<s>``);
* :class:`Attention` of each decoder output over the encoder states, the context and the
  output combined (``tanh(W [h; c])``) and read out to phoneme scores.

Greedy decoding (:meth:`G2PModel.greedy`, and ``model(letters)`` without a decoder input) runs
the same cell one step at a time, feeding back the phoneme it chose, until ``</s>``.

Both register in :data:`SAVED_MODULES`, so :func:`rnnkit.load` rebuilds a saved G2P model
without importing any recipe.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from rnnkit.cells import LSTMCell
from rnnkit.layers import Dense, Embedding, Layer, SavedModule
from rnnkit.recurrence import Bidirectional, RecurrenceFrom
from rnnkit.sequences import SequenceBatch

__all__ = ["SAVED_MODULES", "Attention", "G2PModel"]


class Attention(Layer):
    """Attention of queries over a SequenceBatch of keys (e.g. encoder states).

    For a query ``q`` and the keys ``k_1..k_S`` of its sequence: scores ``e_s``, weights
    ``a = softmax(e)`` over the ``S`` real steps (never padding), context ``sum_s a_s k_s``.

    * ``'dot'`` (Luong): ``e_s = q . k_s`` (needs ``query_size == key_size``);
    * ``'general'`` (Luong): ``e_s = q W k_s``, ``weight [Q, K]``;
    * ``'additive'`` (Bahdanau): ``e_s = v . tanh(W_q q + W_k k_s)``, ``W_q [A, Q]``,
      ``W_k [A, K]``, ``v [A]``.

    ``forward(query, keys)``: ``query`` is ``[B, Q]`` (one query per sequence of ``keys``) or
    a SequenceBatch of ``B`` sequences of ``[Q]`` (a decoder's outputs); the context has the
    query's layout with ``[K]`` per row. :meth:`weights` gives ``a`` (``[B, S]`` or a
    SequenceBatch of ``[S]``, zero past each key sequence's end).

    >>> keys = SequenceBatch.from_list([torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
    ...                                 torch.tensor([[2.0, 2.0]])])
    >>> attend = Attention(2, 2, "dot")
    >>> attend.weights(torch.tensor([[0.0, 0.0], [5.0, 5.0]]), keys).tolist()
    [[0.5, 0.5], [1.0, 0.0]]
    >>> attend(torch.tensor([[0.0, 0.0], [5.0, 5.0]]), keys).tolist()
    [[0.5, 0.5], [2.0, 2.0]]
    """

    def __init__(
        self,
        query_size: int,
        key_size: int,
        kind: Literal["dot", "general", "additive"] = "general",
        attention_size: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("dot", "general", "additive"):
            raise ValueError(f"kind: expected 'dot', 'general' or 'additive', found {kind!r}")
        if kind == "dot" and query_size != key_size:
            raise ValueError(
                f"kind='dot': expected query_size == key_size, found {query_size} and "
                f"{key_size}; use 'general' or 'additive'"
            )
        self.query_size, self.key_size, self.kind = query_size, key_size, kind
        self.attention_size = attention_size if attention_size is not None else key_size
        if kind == "general":
            self.weight = nn.Parameter(torch.empty(query_size, key_size))
            nn.init.xavier_uniform_(self.weight)
        elif kind == "additive":
            self.query_proj = nn.Linear(query_size, self.attention_size, bias=False)
            self.key_proj = nn.Linear(key_size, self.attention_size)
            self.v = nn.Parameter(torch.empty(self.attention_size).uniform_(-0.1, 0.1))

    def _scores(self, q: Tensor, keys: Tensor) -> Tensor:
        """``q [B, T, Q]``, ``keys [B, S, K]`` -> ``[B, T, S]``."""
        if self.kind == "dot":
            return q @ keys.transpose(1, 2)
        if self.kind == "general":
            return (q @ self.weight) @ keys.transpose(1, 2)
        hidden = self.query_proj(q).unsqueeze(2) + self.key_proj(keys).unsqueeze(1)
        return torch.tanh(hidden) @ self.v

    def _attend(self, query: Tensor | SequenceBatch, keys: SequenceBatch) -> tuple[Tensor, Tensor]:
        """``(weights [B, T, S], padded keys [B, S, K])`` with the query rows as ``[B, T, Q]``
        in the caller's order (``T = 1`` for a ``[B, Q]`` query)."""
        if not isinstance(keys, SequenceBatch):
            raise TypeError(f"keys: expected a SequenceBatch, found {type(keys).__name__}")
        if isinstance(query, SequenceBatch):
            q, _ = query.to_padded()
        elif isinstance(query, Tensor) and query.dim() == 2:
            q = query.unsqueeze(1)
        else:
            found = tuple(query.shape) if isinstance(query, Tensor) else type(query).__name__
            raise TypeError(f"query: expected a [B, Q] tensor or a SequenceBatch, found {found}")
        if q.shape[0] != keys.batch_size or q.shape[-1] != self.query_size:
            raise ValueError(
                f"query: expected {keys.batch_size} queries (one per key sequence) of size "
                f"{self.query_size}, found shape {tuple(q.shape)}"
            )
        padded, lengths = keys.to_padded()
        real = torch.arange(padded.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)  # [B, S]
        scores = self._scores(q, padded)
        scores = scores.masked_fill(~real.to(scores.device).unsqueeze(1), float("-inf"))
        return torch.softmax(scores, dim=-1), padded

    @staticmethod
    def _like_query(query: Tensor | SequenceBatch, padded: Tensor) -> Tensor | SequenceBatch:
        """``[B, T, F]`` (caller order) back to the query's layout."""
        if isinstance(query, Tensor):
            return padded.squeeze(1)
        time_major = padded.index_select(0, query.sorted_indices).transpose(0, 1)
        return query.with_data(time_major.flatten(0, 1).index_select(0, query.padded_index))

    def forward(self, query: Tensor | SequenceBatch, keys: SequenceBatch) -> Any:
        weights, padded = self._attend(query, keys)
        return self._like_query(query, weights @ padded)

    def weights(self, query: Tensor | SequenceBatch, keys: SequenceBatch) -> Any:
        """The attention weights, in the query's layout with ``[S]`` per row."""
        return self._like_query(query, self._attend(query, keys)[0])


class G2PModel(nn.Module):
    """Bidirectional-LSTM encoder, LSTM decoder with attention (see the module docstring).

    Shapes: ``letters`` a SequenceBatch of ids ``[]`` per step (alphabet ``L``);
    ``decoder_input`` a SequenceBatch of phoneme ids (``<s>`` then the reference); the output
    is a SequenceBatch of ``[P]`` scores, one row per decoder input step. Without a decoder
    input the model decodes greedily (:meth:`decode`); the phoneme alphabet's last two ids are
    then taken as ``<s>`` and ``</s>``.
    """

    def __init__(
        self,
        letters: int,
        phonemes: int,
        embedding_size: int = 64,
        hidden_size: int = 128,
        attention: Literal["dot", "general", "additive"] = "general",
    ) -> None:
        super().__init__()
        h, d = hidden_size, 2 * hidden_size
        self.letters, self.phonemes = letters, phonemes
        self.embedding_size, self.hidden_size, self.attention_kind = (
            embedding_size,
            hidden_size,
            attention,
        )
        self.letter_embedding = Embedding(letters, embedding_size)
        self.encoder = Bidirectional(LSTMCell(embedding_size, h), LSTMCell(embedding_size, h))
        self.bridge = Dense(d, 2 * d, activation=torch.tanh)
        self.phoneme_embedding = Embedding(phonemes, embedding_size)
        self.decoder = RecurrenceFrom(LSTMCell(embedding_size, d))
        self.attention = Attention(d, d, attention)
        self.combine = Dense(2 * d, d, activation=torch.tanh)
        self.readout = Dense(d, phonemes)

    def encode(self, letters: SequenceBatch) -> tuple[SequenceBatch, tuple[Tensor, Tensor]]:
        """Encoder states ``[2H]`` per letter and the decoder's initial ``(h, c)`` ``[B, 2H]``,
        from the forward direction's last output and the backward direction's first."""
        states = self.encoder(self.letter_embedding(letters))
        h = self.hidden_size
        ends = torch.cat([states.last()[:, :h], states.first()[:, h:]], dim=1)
        start_h, start_c = self.bridge(ends).chunk(2, dim=1)
        return states, (start_h.contiguous(), start_c.contiguous())

    def _scores(self, output: Any, keys: SequenceBatch) -> Any:
        context = self.attention(output, keys)
        joined: Any
        if isinstance(output, SequenceBatch):
            joined = output.with_data(torch.cat([output.data, context.data], dim=1))
        else:
            joined = torch.cat([output, context], dim=1)
        return self.readout(self.combine(joined))

    def forward(self, letters: SequenceBatch, decoder_input: SequenceBatch | None = None) -> Any:
        """Teacher forcing: a SequenceBatch of ``[P]`` scores, one row per decoder input step;
        without ``decoder_input``: :meth:`decode`."""
        if decoder_input is None:
            return self.decode(letters)
        keys, state = self.encode(_sequences(letters))
        outputs = self.decoder(state, self.phoneme_embedding(decoder_input))
        return self._scores(outputs, keys)

    def decode(self, letters: SequenceBatch) -> Tensor:
        """Greedy pronunciations as ids ``[B, L]`` (caller order), ``<s>`` = ``phonemes - 2``
        and ``</s>`` = ``phonemes - 1``: row ``i`` holds the phonemes chosen for word ``i``
        (at most ``2 * letters_i + 5``) followed by ``</s>``, repeated up to ``L``."""
        letters = _sequences(letters)
        bos, eos = self.phonemes - 2, self.phonemes - 1
        limits = (2 * letters.lengths + 5).tolist()
        rows = self.greedy(letters, bos, eos, max(limits))
        rows = [row[:limit] for row, limit in zip(rows, limits, strict=True)]
        out = torch.full((len(rows), 1 + max(map(len, rows))), eos, dtype=torch.int64)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        return out

    def greedy(
        self, letters: SequenceBatch, bos: int, eos: int, max_length: int
    ) -> list[list[int]]:
        """The phoneme ids chosen one step at a time (argmax), each list up to its ``eos``
        (left out) or ``max_length`` ids, in the caller's order."""
        keys, state = self.encode(letters)
        cell = self.decoder.cell
        batch, device = letters.batch_size, keys.data.device
        item = torch.full((batch,), bos, dtype=torch.int64, device=device)
        chosen: list[Tensor] = []
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        current: Any = state
        for _ in range(max_length):
            current = cell(self.phoneme_embedding(item), current)
            item = self._scores(current[0], keys).argmax(-1)
            chosen.append(item)
            done |= item == eos
            if bool(done.all()):
                break
        rows = torch.stack(chosen, dim=1).tolist()
        return [row[: row.index(eos)] if eos in row else row for row in rows]


def _sequences(letters: Any) -> SequenceBatch:
    """A SequenceBatch of letter ids; ``[B]`` ids (a minibatch of one-letter words, which a
    :class:`~rnnkit.data.MinibatchSource` stacks) become ``B`` sequences of one step."""
    if isinstance(letters, Tensor) and letters.dim() == 1:
        return SequenceBatch.from_list(list(letters.unsqueeze(1)))
    if not isinstance(letters, SequenceBatch):
        found = tuple(letters.shape) if isinstance(letters, Tensor) else type(letters).__name__
        raise TypeError(f"letters: expected a SequenceBatch of letter ids, found {found}")
    return letters


SAVED_MODULES: list[SavedModule] = [
    (
        Attention,
        lambda m: {
            "query_size": m.query_size,
            "key_size": m.key_size,
            "kind": m.kind,
            "attention_size": m.attention_size,
        },
        "rnnkit.Attention",
    ),
    (
        G2PModel,
        lambda m: {
            "letters": m.letters,
            "phonemes": m.phonemes,
            "embedding_size": m.embedding_size,
            "hidden_size": m.hidden_size,
            "attention": m.attention_kind,
        },
        "rnnkit.G2PModel",
    ),
]
