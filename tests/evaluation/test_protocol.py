"""The protocol: episodes as a pure function of (seed, index), fingerprints, bad protocols."""

from __future__ import annotations

import hashlib

import pytest
import torch
from eval_learners import (
    NearestNeighbourLearner,
    RecordingLearner,
    UniformLearner,
    coded_dataset,
)

from metamem.episodes.sampler import EpisodeSampler
from metamem.evaluation import Protocol, ProtocolError, evaluate
from metamem.rng import episode_keys_from_seed

KW = dict(n_way=5, k_shot=2, n_query=3, episodes=23, seed=7)


def test_same_protocol_same_fingerprint_and_accuracies(synth):
    a = evaluate(NearestNeighbourLearner(), synth, batch_size=8, protocol="both", **KW)
    b = evaluate(NearestNeighbourLearner(), synth, batch_size=8, protocol="both", **KW)
    assert a.fingerprint == b.fingerprint
    assert torch.equal(a.per_episode, b.per_episode)
    assert torch.equal(a.scores["sequence"].per_episode, b.scores["sequence"].per_episode)
    assert a.per_episode.shape == (23,)
    # not a degenerate learner: the per-episode accuracies vary
    assert a.per_episode.unique().numel() > 1


def test_episodes_do_not_depend_on_batch_size(synth):
    a = evaluate(NearestNeighbourLearner(), synth, batch_size=23, protocol="both", **KW)
    b = evaluate(NearestNeighbourLearner(), synth, batch_size=4, protocol="both", **KW)
    assert a.fingerprint == b.fingerprint
    assert torch.equal(a.per_episode, b.per_episode)
    assert a.per_presentation == b.per_presentation


def test_other_seed_other_fingerprint(synth):
    a = evaluate(UniformLearner(), synth, batch_size=8, **KW)
    b = evaluate(UniformLearner(), synth, batch_size=8, **dict(KW, seed=8))
    assert a.fingerprint != b.fingerprint
    c = evaluate(UniformLearner(), synth, batch_size=8, **dict(KW, episodes=22))
    assert c.fingerprint != a.fingerprint


def test_fingerprint_matches_a_naive_hash():
    ds = coded_dataset()
    proto = Protocol.for_dataset(ds, **KW)
    sampler = EpisodeSampler(ds, n_way=5, k_shot=2, n_query=3)
    rows = []
    for i in range(23):  # one episode at a time, as a reference
        keys = episode_keys_from_seed(7, torch.tensor([i]))
        b = sampler.sample_keys(keys)
        rows.append(torch.cat([b.support_index[0], b.query_index[0], keys]))
    h = hashlib.sha256(b"metamem-episodes-v1 episodes=23 support=10 query=15\n")
    h.update(torch.stack(rows).numpy().astype("<i8").tobytes())
    assert proto.fingerprint(ds, batch_size=5) == h.hexdigest()
    assert evaluate(UniformLearner(), ds, batch_size=6, **KW).fingerprint == h.hexdigest()


class _OtherRecorder(RecordingLearner):
    """A different learner (nearest neighbour answers) that also records what it sees."""

    def predict(self, support_x, support_y, query_x, *, n_way, support_mask=None):
        super().predict(support_x, support_y, query_x, n_way=n_way, support_mask=support_mask)
        return NearestNeighbourLearner.predict(
            self, support_x, support_y, query_x, n_way=n_way, support_mask=support_mask
        )


def test_two_learners_see_identical_episodes():
    ds = coded_dataset()
    a, b = RecordingLearner(), _OtherRecorder()
    ra = evaluate(a, ds, batch_size=5, protocol="set", **KW)
    rb = evaluate(b, ds, batch_size=9, protocol="set", **KW)
    assert ra.fingerprint == rb.fingerprint
    sa, sb = torch.cat(a.support), torch.cat(b.support)
    assert sa.shape == (23, 10) and torch.equal(sa, sb)
    assert torch.equal(torch.cat(a.query), torch.cat(b.query))
    # and they are the protocol's episodes
    proto = Protocol.for_dataset(ds, **KW)
    ref = next(proto.batches(ds, batch_size=23))
    assert torch.equal(sa, ref.support_index)
    assert torch.equal(torch.cat(a.query), ref.query_index)


def test_protocol_asks_for_too_many_ways():
    ds = coded_dataset(num_classes=12, per_class=7)
    with pytest.raises(ProtocolError, match=r"protocol \(13-way 1-shot.*\): n_way=13 is larger than the 12 classes of dataset 'coded' split 'test'"):
        evaluate(UniformLearner(), ds, n_way=13, k_shot=1, n_query=1, episodes=2)


def test_protocol_asks_for_too_many_shots():
    ds = coded_dataset(num_classes=12, per_class=7)
    with pytest.raises(ProtocolError, match=r"class 'c0' of dataset 'coded' split 'test' has 7 images, fewer than k_shot \+ n_query = 10"):
        evaluate(UniformLearner(), ds, n_way=5, k_shot=5, n_query=5, episodes=2)


def test_bad_protocol_values():
    ds = coded_dataset()
    with pytest.raises(ProtocolError, match="episodes must be an integer >= 1, got 0"):
        evaluate(UniformLearner(), ds, episodes=0, n_query=1)
    with pytest.raises(ProtocolError, match="unknown eval.protocol 'sets'"):
        evaluate(UniformLearner(), ds, n_query=1, episodes=2, protocol="sets")
    with pytest.raises(ProtocolError, match="set scoring needs n_query >= 1"):
        evaluate(UniformLearner(), ds, n_query=0, episodes=2, protocol="both")
    # the sequence scoring alone works without queries (a support-only sequence)
    r = evaluate(UniformLearner(), ds, n_way=3, k_shot=4, n_query=0, episodes=2, protocol="sequence")
    assert len(r.per_presentation) == 4


@pytest.mark.gpu
def test_same_episodes_on_cpu_and_gpu():
    ds = coded_dataset()
    a, b = RecordingLearner(), RecordingLearner()
    cpu = evaluate(a, ds, device="cpu", batch_size=4, **KW)
    gpu = evaluate(b, ds, device="cuda", batch_size=4, **KW)
    assert gpu.device.startswith("cuda")
    assert cpu.fingerprint == gpu.fingerprint
    assert torch.equal(torch.cat(a.support), torch.cat(b.support).cpu())
    assert torch.equal(cpu.per_episode, gpu.per_episode)
    assert cpu.per_presentation == gpu.per_presentation
