"""Encoder-decoder with attention: Attention against a per-sequence loop, greedy decoding
against the teacher-forced pass, the split by word, scoring, and a short G2P run."""

import itertools

import pytest
import torch
from conftest import SHARED_DATA

import rnnkit.cli
from rnnkit import SequenceBatch, save
from rnnkit.data.text import Vocabulary
from rnnkit.tasks.seq2seq import (
    BOS,
    EOS,
    Attention,
    G2PConfig,
    G2PModel,
    edit_distance,
    predict,
    pronounce,
    read_cmudict,
    score,
    split_words,
    train_g2p,
)

CMUDICT = SHARED_DATA / "cmudict" / "dict.txt"


def _reference_attention(attend: Attention, query: torch.Tensor, keys: torch.Tensor):
    """One query [Q] over one sequence's keys [S, K], written out per kind."""
    if attend.kind == "dot":
        scores = keys @ query
    elif attend.kind == "general":
        scores = keys @ (query @ attend.weight)
    else:
        hidden = torch.tanh(attend.query_proj.weight @ query + attend.key_proj(keys))
        scores = hidden @ attend.v
    weights = torch.softmax(scores, dim=0)
    return weights @ keys, weights


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_attention_equals_a_loop_over_each_sequence(kind):
    torch.manual_seed(0)
    attend = Attention(4, 4, kind, attention_size=3).double()
    keys_list = [torch.randn(n, 4, dtype=torch.float64) for n in (3, 5, 1)]
    query_list = [torch.randn(n, 4, dtype=torch.float64) for n in (2, 1, 4)]
    keys = SequenceBatch.from_list(keys_list)
    queries = SequenceBatch.from_list(query_list)
    context = attend(queries, keys).to_list()
    weights = attend.weights(queries, keys).to_list()
    for q, k, c, w in zip(query_list, keys_list, context, weights, strict=True):
        for t in range(q.shape[0]):
            ref_c, ref_w = _reference_attention(attend, q[t], k)
            torch.testing.assert_close(c[t], ref_c, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(w[t, : len(k)], ref_w, rtol=1e-10, atol=1e-12)
            assert not w[t, len(k) :].detach().any()
    # one [B, Q] query per sequence: the first query of each
    firsts = torch.stack([q[0] for q in query_list])
    torch.testing.assert_close(attend(firsts, keys), torch.stack([c[0] for c in context]))
    torch.autograd.gradcheck(
        lambda q, k: attend(q, SequenceBatch.from_list([k[:3], k[3:]])),
        (
            torch.randn(2, 4, dtype=torch.float64, requires_grad=True),
            torch.randn(5, 4, dtype=torch.float64, requires_grad=True),
        ),
    )


def test_attention_rejects_mismatched_queries():
    keys = SequenceBatch.from_list([torch.ones(2, 3)])
    with pytest.raises(ValueError, match=r"query: expected 1 queries .* of size 3, found"):
        Attention(3, 3)(torch.ones(2, 3), keys)
    with pytest.raises(ValueError, match=r"kind='dot': expected query_size == key_size"):
        Attention(2, 3, "dot")


def test_greedy_decoding_agrees_with_the_teacher_forced_pass():
    # Feeding the greedy choices back as the decoder input, the teacher-forced pass (RecurrenceFrom
    # over all steps) must choose the same phonemes: the step loop and the scan are one model.
    torch.manual_seed(0)
    model = G2PModel(letters=7, phonemes=9, embedding_size=5, hidden_size=6).eval()
    words = [torch.tensor(w) for w in ([1, 2, 3], [4, 5], [6, 0, 1, 2, 3])]
    letters = SequenceBatch.from_list(words)
    bos, eos = 7, 8
    with torch.no_grad():
        chosen = model.greedy(letters, bos, eos, max_length=6)
        for word, ids in zip(words, chosen, strict=True):
            steps = ids if len(ids) == 6 else [*ids, eos]
            x = SequenceBatch.from_list([word])
            y = SequenceBatch.from_list([torch.tensor([bos, *steps[:-1]])])
            assert model(x, y).data.argmax(-1).tolist() == steps
        # and the batch does not mix its rows: each word alone decodes the same
        alone = [model.greedy(SequenceBatch.from_list([w]), bos, eos, 6)[0] for w in words]
    assert alone == chosen


def test_reader_split_and_scores(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text(";;; x\nREAD  R IY1 D\nREAD(1)  R EH1 D\nRED  R EH1 D\nBAD\n")
    with pytest.raises(ValueError, match=r"d.txt:5:1: expected 'WORD  PH1 PH2 ...'"):
        read_cmudict(path)
    path.write_text(";;; x\nREAD  R IY1 D\nREAD(1)  R EH1 D\nRED  R EH1 D\n")
    assert read_cmudict(path) == {
        "READ": [("R", "IY", "D"), ("R", "EH", "D")],
        "RED": [("R", "EH", "D")],
    }
    assert read_cmudict(path, stress=True)["READ"][1] == ("R", "EH1", "D")
    words = [f"W{i}" for i in range(100)]
    parts = split_words(words, (0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [80, 10, 10]
    assert sorted(itertools.chain(*parts)) == sorted(words)
    assert split_words(words, (0.8, 0.1, 0.1), seed=3) == parts
    # either pronunciation of READ is right; PER uses the nearest one
    per, wer = score([["R", "EH", "D"], ["R", "IY"]], [read_cmudict(path)["READ"]] * 2)
    assert (per, wer) == (100 * 1 / 6, 50.0)
    assert edit_distance("kitten", "sitting") == 3


def test_pronounce_from_a_saved_run_and_unknown_letters(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    letters = Vocabulary(list("ABC"), pad=None, unk=None)
    phonemes = Vocabulary(["AE", "B", BOS, EOS], pad=None, unk=None)
    model = G2PModel(len(letters), len(phonemes), 4, 5)
    run = tmp_path / "run"
    save(model, run)
    import json

    (run / "vocabularies.json").write_text(
        json.dumps({"letters": letters.to_dict(), "phonemes": phonemes.to_dict()})
    )
    assert pronounce(run, ["cab", "A"]) == predict(model, ["CAB", "A"], letters, phonemes)
    monkeypatch.setattr(rnnkit.cli, "TASK_MODULES", ("rnnkit.tasks.seq2seq",))
    assert rnnkit.cli.main(["g2p", "predict", str(run), "abz"]) == 1
    err = capsys.readouterr().err
    assert "word 'ABZ'" in err and "['Z']" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(not CMUDICT.is_file(), reason="../shared/data/cmudict/dict.txt is absent")
def test_a_short_run_learns_to_pronounce(tmp_path):
    # 3,000 training words, one epoch: measured test PER PER_MEASURED % and WER WER_MEASURED %
    # on 300 held-out words (an empty guess scores PER 100 %, WER 100 %).
    config = G2PConfig(
        embedding_size=32,
        hidden_size=48,
        epochs=2,
        minibatch_size=32,
        learning_rate=0.01,
        max_train_words=3000,
        max_test_words=300,
    )
    result = train_g2p(config, CMUDICT, tmp_path / "run", progress=False)
    assert result.test_words == 300
    assert result.per < 60.0 and result.wer < 95.0, result
    assert (tmp_path / "run" / "predictions.tsv").read_text().count("\n") == 300
