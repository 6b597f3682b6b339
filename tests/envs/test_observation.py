"""One observation layout: what the environment writes is what the policies read."""

from __future__ import annotations

import numpy as np
import torch

from prune_env.envs.observation import DESCRIPTOR, ObservationLayout


def test_write_then_read_back_one_and_a_batch():
    layout = ObservationLayout(max_filters=6)
    descriptor = np.linspace(0, 1, len(DESCRIPTOR))
    features = np.arange(4 * 4).reshape(4, 4) / 16
    obs = layout.write(descriptor, features)
    assert obs.shape == layout.space.shape == (len(DESCRIPTOR) + 5 * 6,)
    assert np.allclose(layout.descriptor(obs), descriptor)
    assert np.allclose(layout.features(obs)[:4], features)
    assert not layout.features(obs)[4:].any()
    assert layout.group_size(obs) == 4 and layout.mask(obs).tolist() == [1] * 4 + [0] * 2
    assert np.allclose(layout.feature(obs, "activation"), features[:, 2])
    assert obs[layout.index("removable")] == descriptor[-1]
    batch = torch.as_tensor(np.stack([obs, obs]))
    assert layout.features(batch).shape == (2, 6, 4)
    assert torch.equal(layout.mask(batch)[1], torch.as_tensor(layout.mask(obs)))


def test_the_environment_and_its_policies_share_it(make_env):
    from agents.l2pf_policy import L2PFPolicy
    from baselines.simple import make_policy

    env = make_env()
    obs, _ = env.reset(seed=0)
    layout = env.unwrapped.layout
    assert env.observation_space == layout.space
    size = layout.group_size(obs)
    assert size == env.unwrapped.episode_state.group.size
    assert make_policy("l1", layout.max_filters, ratio=0.5).layout == layout
    desc, feats, mask = L2PFPolicy(layout.max_filters).split(torch.as_tensor(obs[None]))
    assert int(mask.sum()) == size and feats.shape[1:] == (layout.max_filters, 4)
    # AMC's observation: the descriptor alone, the same entries the full one starts with
    from prune_env.envs.wrappers import DescriptorObservation

    wrapped = DescriptorObservation(env)
    short, _ = wrapped.reset(seed=0)
    assert wrapped.observation_space.shape == (len(DESCRIPTOR),)
    assert np.array_equal(short, layout.descriptor(obs)) and short in wrapped.observation_space
