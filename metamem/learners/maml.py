"""MAML: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017, arXiv:1703.03400).

The network is a backbone plus a linear head of N outputs, with meta-parameters ``theta``.
For each episode the inner loop adapts them on the support set,
``theta'_{j+1} = theta'_j - alpha * grad L_support(theta'_j)`` (``theta'_0 = theta``,
``inner_steps`` steps in training, ``eval_inner_steps`` in eval mode), and the outer loss is
the query cross-entropy of ``f(theta')``, averaged over episodes. Second-order MAML
differentiates through the inner gradients; first-order MAML (``first_order=True``) treats
them as constants (drops the Hessian term).

Implementation (``episode_batching``), three ways that give the same logits and gradients up
to float rounding:

* ``"grouped"``, the CPU default of ``"auto"`` for networks built from Conv-4 layers
  (:func:`~metamem.learners.grouped.supports_grouped`): the B episodes' networks run side by
  side, each episode's images in its own channels, one grouped convolution per layer
  (:mod:`metamem.learners.grouped`). The inner loop takes one ``torch.autograd.grad`` of the
  summed support losses, which gives every episode its own gradient (the episodes are
  independent), with ``create_graph`` for second order. Episodes go ``train_chunk_images``
  (training) or ``eval_chunk_images`` (scoring) images at a time: a paper batch of 32
  episodes in one pass trained 1.3x faster than the loop, in chunks of 4 episodes 1.7x
  (smaller activations stay in the CPU's caches). On one CPU thread a paper-shape Omniglot
  training step (5-way 1-shot 1-query, B=32, second order) costs 1.6-1.7x less per episode
  than one episode at a time, scoring (10 inner steps) 1.8-2.6x less (docs/benchmarks.md,
  "MAML on the CPU").
* ``"loop"``: one episode at a time with :func:`torch.func.functional_call` +
  :func:`torch.func.grad`; the CPU fallback of ``"auto"`` for other networks.
* ``"vmap"``: the same per-episode function vectorised with :func:`torch.func.vmap`, the
  default elsewhere (GPU). On the CPU ``vmap``'s batching rules run the second-order
  graph up to 5x slower than the loop.

BatchNorm: the backbone is built with ``track_running_stats=False``, so every BatchNorm layer
(:class:`~metamem.learners.backbones.BatchStatNorm2d`, whose second-order gradients stay
right under ``vmap``) always normalises with the statistics of the batch it sees -- the support set of one
episode during adaptation, the query set of one episode for prediction, in train *and* eval
mode. This is the transductive setting of the original MAML code; it makes each episode
independent of the others in the batch (``batch_independent_train``), but a query's
logits depend on the other queries of its episode. BatchNorm's affine parameters are
adapted in the inner loop like every other parameter.

Query batches (``query_groups``): with ``"episode"`` (the default) the N*Q queries of an
episode pass through the adapted network together, so BatchNorm normalises them with the
statistics of all of them. With ``"one_per_class"`` they pass in Q groups of N, group j
holding the j-th query of every class (queries are class-major: query ``c*Q + j`` has label
c, as :class:`~metamem.types.EpisodeBatch` lays them out). That is the query batch of the
original MAML code, which trains and tests on N queries, one per class. A model trained
with Q = 1 (the paper's Omniglot recipe) saw only such batches; scored with Q = 15 and
``"episode"`` its BatchNorm gets 75-image statistics it never saw in training (Omniglot
5-way 1-shot: 95.96 % against 98.10 % in batches of one query per class, same weights and
episodes; docs/results/omniglot_paper.md).
Both settings are transductive: a query's logits depend on the other queries of its batch.
With Q = 1 the two settings are the same computation. A query set whose size is not a
multiple of N, and the masked path below, score the whole query set as one batch.

Any way (``head_init``): the head is the last ``nn.Linear`` of the network. With
``head_init="learned"`` (the original MAML) its meta-learned weights start the inner loop of
an episode with the training N ways; an episode with another number of ways N' starts from
a zero head of N' outputs instead, adapted by the inner loop like the rest (the
zero-initialised head of later MAML work, e.g. Triantafillou et al. 2020's analysis and Kao et
al. 2022, "MAML is a noisy contrastive learner"). With ``head_init="zero"`` every episode,
in training too, starts from a zero head, so the meta-trained body is the same whatever the
way. A zero head gives equal logits before the first step, and its first inner step updates
only the head (the body's gradient passes through the zero weights), so evaluate with
``eval_inner_steps >= 2``.

Scoring in chunks: without autograd (evaluation runs under ``torch.no_grad()``), the B
episodes are adapted ``eval_chunk`` at a time (each chunk still one ``vmap``, or one
grouped pass), so the activations of one chunk, not of the whole batch, are alive at once.
A vmapped batch of 32 20-way 5-shot episodes holds 3,200 support images per layer,
allocations of hundreds of MB that a CPU process pays for in page faults each time; one
episode at a time scored the same episodes in 2.9 CPU-s each instead of 4.5
(docs/benchmarks.md, "Host allocator").

Masked support (``predict(..., support_mask=...)``): absent items must not enter the
support BatchNorm statistics, so this eval-only path loops over episodes and adapts on each
episode's present items (documented exception to the no-loop rule); a class with no
present item gets logit ``-inf``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from metamem.learners._common import mask_absent, present_classes, support_onehot
from metamem.learners.backbones import build_trunk
from metamem.learners.base import LEARNERS, same_results
from metamem.learners.capabilities import SetLearner
from metamem.learners.grouped import grouped_forward, supports_grouped
from metamem.registry import forwards_to

__all__ = ["MAML", "build_maml"]

Params = dict[str, torch.Tensor]


class MAML(SetLearner):
    """MAML around any network whose output has ``n_way`` logits.

    Args:
        net: the network ``[*, C, H, W] -> [*, N]`` (backbone + linear head). It must not
            keep running statistics (buffers are not adapted).
        n_way: N, outputs of ``net``; episodes must have this many ways.
        inner_steps: inner gradient steps in train mode.
        inner_lr: alpha, the inner-loop step size.
        eval_inner_steps: inner steps in eval mode (``None``: same as ``inner_steps``).
        first_order: drop second-order terms (first-order MAML).
        head_init: ``"learned"`` (meta-learned head for N-way episodes, zero head for other
            ways) or ``"zero"`` (every episode starts from a zero head).
        eval_chunk_images: without autograd, adapt and score as many episodes at once as
            keep the support and query images of a chunk at or under this (at least one
            episode; the vmap and grouped paths); ``None``: the whole batch at once.
        train_chunk_images: with autograd (training), the grouped path adapts as many
            episodes at once as keep the support and query images of a chunk at or under
            this (at least one episode); ``None``: the whole batch at once. 40: four
            5-way 1-shot 1-query episodes, the fastest chunk for that shape on the CPU.
        episode_batching: ``"grouped"`` (the B episodes side by side, one grouped
            convolution per layer, :mod:`metamem.learners.grouped`), ``"vmap"`` (the B
            episodes in one vmapped call), ``"loop"`` (one episode at a time) or ``"auto"``
            (on the CPU grouped when the network allows it, else the loop; vmap elsewhere).
        query_groups: ``"episode"`` (an episode's queries pass through the adapted network
            together) or ``"one_per_class"`` (in Q batches of N, one query per class, as in
            the original MAML code; see the module docstring).
    """

    batch_independent_train = True

    def __init__(
        self,
        net: nn.Module,
        *,
        n_way: int,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        eval_inner_steps: int | None = None,
        first_order: bool = False,
        head_init: Literal["learned", "zero"] = "learned",
        eval_chunk_images: int | None = 512,
        train_chunk_images: int | None = 40,
        episode_batching: Literal["auto", "vmap", "loop", "grouped"] = "auto",
        query_groups: Literal["episode", "one_per_class"] = "episode",
    ) -> None:
        super().__init__()
        if query_groups not in ("episode", "one_per_class"):
            raise ValueError(
                f"maml: query_groups must be 'episode' or 'one_per_class', got {query_groups!r}"
            )
        self.query_groups = query_groups
        if episode_batching not in ("auto", "vmap", "loop", "grouped"):
            raise ValueError(
                f"maml: episode_batching must be 'auto', 'vmap', 'loop' or 'grouped', got {episode_batching!r}"
            )
        self.episode_batching = episode_batching
        if eval_chunk_images is not None and eval_chunk_images < 1:
            raise ValueError(f"maml: eval_chunk_images must be >= 1 or None, got {eval_chunk_images}")
        self.eval_chunk_images = eval_chunk_images
        if train_chunk_images is not None and train_chunk_images < 1:
            raise ValueError(f"maml: train_chunk_images must be >= 1 or None, got {train_chunk_images}")
        self.train_chunk_images = train_chunk_images
        self.groupable = supports_grouped(net)
        if episode_batching == "grouped" and not self.groupable:
            raise ValueError(
                "maml: episode_batching='grouped' needs a network of nn.Sequential, Conv4, nn.Conv2d, "
                "BatchStatNorm2d, pooling, activations, nn.Flatten and nn.Linear "
                "(metamem.learners.grouped.supports_grouped); use 'loop' or 'vmap'"
            )
        if head_init not in ("learned", "zero"):
            raise ValueError(f"maml: head_init must be 'learned' or 'zero', got {head_init!r}")
        linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
        self.head_name = linears[-1] if linears else None
        if head_init == "zero" and self.head_name is None:
            raise ValueError("maml: head_init='zero' needs a network whose last layer is nn.Linear")
        self.head_init = head_init
        if inner_steps < 0 or (eval_inner_steps is not None and eval_inner_steps < 0):
            raise ValueError(
                f"maml: inner_steps and eval_inner_steps must be >= 0, got {inner_steps}, {eval_inner_steps}"
            )
        self.net = net
        self.n_way = n_way
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.first_order = first_order

    def predict(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, *,
                n_way: int, support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Query logits ``[B, Qn, N]`` of the per-episode adapted networks."""
        params = self.episode_params(n_way)
        groups = self.query_batches(query_x.shape[1], n_way) if support_mask is None else 1
        if support_mask is None and self.groups_episodes(support_x.device):
            chunk = self.grouped_chunk(support_x.shape[0], support_x.shape[1] + query_x.shape[1])
            return torch.cat([
                self.grouped_episodes(params, support_x[i:i + chunk], support_y[i:i + chunk], query_x[i:i + chunk],
                                      query_groups=groups)
                for i in range(0, support_x.shape[0], chunk)
            ])
        episode = self._episode_fn(groups)
        if support_mask is None and self.loops_over_episodes(support_x.device):
            return torch.stack([
                episode(params, support_x[b], support_y[b], query_x[b]) for b in range(support_x.shape[0])
            ])
        if support_mask is None:
            batched = vmap(episode, in_dims=(None, 0, 0, 0))
            chunk = self.eval_chunk(support_x.shape[0], support_x.shape[1] + query_x.shape[1])
            if chunk >= support_x.shape[0]:
                return batched(params, support_x, support_y, query_x)
            return torch.cat([
                batched(params, support_x[i:i + chunk], support_y[i:i + chunk], query_x[i:i + chunk])
                for i in range(0, support_x.shape[0], chunk)
            ])
        rows = []
        for b in range(support_x.shape[0]):  # eval-time path: each episode's own present items
            keep = support_mask[b]
            rows.append(episode(params, support_x[b, keep], support_y[b, keep], query_x[b]))
        present = present_classes(support_onehot(support_y, n_way, support_mask))
        return mask_absent(torch.stack(rows), present)

    def query_batches(self, n_queries: int, n_way: int) -> int:
        """The number of query batches :meth:`predict` scores an episode's ``n_queries``
        queries in: Q = ``n_queries / n_way`` with ``query_groups="one_per_class"`` (when it
        divides), else 1 (the whole query set at once)."""
        if self.query_groups == "one_per_class" and n_way > 0 and n_queries % n_way == 0 and n_queries > n_way:
            return n_queries // n_way
        return 1

    def groups_episodes(self, device: torch.device) -> bool:
        """Whether :meth:`predict` runs the episodes side by side in grouped convolutions
        (:meth:`grouped_episodes`) on ``device``."""
        if self.episode_batching == "auto":
            return device.type == "cpu" and self.groupable
        return self.episode_batching == "grouped"

    def grouped_chunk(self, batch: int, images_per_episode: int) -> int:
        """Episodes the grouped path adapts at once: the most whose support and query images
        stay within ``train_chunk_images`` (autograd on) or ``eval_chunk_images`` (off), at
        least 1."""
        limit = self.train_chunk_images if torch.is_grad_enabled() else self.eval_chunk_images
        if limit is None:
            return batch
        return max(1, min(batch, limit // max(1, images_per_episode)))

    def grouped_episodes(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                         query_x: torch.Tensor, *, query_groups: int = 1) -> torch.Tensor:
        """Adapt B episodes side by side and score their queries: logits ``[B, Qn, N]``.

        The B adapted networks run together, one grouped convolution per layer
        (:mod:`metamem.learners.grouped`); the result is the per-episode loop's up to float
        rounding. Shapes: B episodes, N ways, S = N*K support and Qn = N*Q query images per
        episode (K shots, Q queries per class), C/H/W image.

        Args:
            params: the meta-parameters an episode starts from (:meth:`episode_params`).
            support_x: ``[B, S, C, H, W]``.
            support_y: int64 ``[B, S]``, labels in ``0..N-1``.
            query_x: ``[B, Qn, C, H, W]``.
            query_groups: G, the batches the queries pass in: query ``c*G + j`` goes in batch
                j (class-major queries, ``Qn = N*G``: one query per class in each batch).
        """
        steps = self.inner_steps if self.training else self.eval_inner_steps
        b = support_x.shape[0]
        stacked = {k: v.expand(b, *v.shape) for k, v in params.items()}
        adapted = self.adapt_grouped(stacked, support_x, support_y, steps)
        if query_groups == 1:
            return grouped_forward(self.net, adapted, query_x)
        g, qn = query_groups, query_x.shape[1]
        # [B, N*G, ...] -> [B, N, G, ...] -> [B*G, N, ...]: batch (b, j) holds query j of every class
        batches = query_x.unflatten(1, (qn // g, g)).transpose(1, 2).flatten(0, 1)
        logits = grouped_forward(self.net, {k: v.repeat_interleave(g, dim=0) for k, v in adapted.items()}, batches)
        return logits.unflatten(0, (b, g)).transpose(1, 2).flatten(1, 2)

    def adapt_grouped(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor, steps: int) -> Params:
        """Inner loop for B episodes at once: ``steps`` SGD steps on each episode's support
        cross-entropy (Finn et al. 2017, Eq. 1), the episodes side by side.

        The episodes are independent, so one ``autograd.grad`` of the sum of their (mean)
        support losses gives every episode's own gradient. Second order keeps the graph of
        that gradient (``create_graph``); first order treats it as a constant. Without
        autograd (scoring) each step's parameters are fresh leaves, so no graph outlives a step.

        Args:
            params: each parameter stacked per episode, ``[B, *shape]`` (B episodes).
            support_x: ``[B, S, C, H, W]`` (S = N*K support images).
            support_y: int64 ``[B, S]``, labels in ``0..N-1``.
            steps: number of inner steps.

        Returns:
            The adapted parameters, ``[B, *shape]`` each.
        """
        if support_x.shape[1] == 0 or steps == 0:
            return params
        outer = torch.is_grad_enabled()  # False when scoring under torch.no_grad()
        targets = support_y.reshape(-1)
        for _ in range(steps):
            with torch.enable_grad():
                leaves = {k: v if outer and v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
                logits = grouped_forward(self.net, leaves, support_x)  # [B, S, N]
                per_item = F.cross_entropy(logits.reshape(targets.shape[0], -1), targets, reduction="none")
                loss = per_item.view_as(support_y).mean(dim=1).sum()
                g = torch.autograd.grad(loss, list(leaves.values()), create_graph=outer and not self.first_order)
            with torch.set_grad_enabled(outer):
                params = {k: v - self.inner_lr * (gk.detach() if self.first_order else gk)
                          for (k, v), gk in zip(leaves.items(), g, strict=True)}
        return params

    def loops_over_episodes(self, device: torch.device) -> bool:
        """Whether :meth:`predict` adapts the episodes one at a time on ``device``."""
        if self.episode_batching == "auto":
            return device.type == "cpu" and not self.groupable
        return self.episode_batching == "loop"

    def eval_chunk(self, batch: int, images_per_episode: int) -> int:
        """Episodes adapted at once: ``batch`` with autograd on (training) or no chunk limit,
        else the most whose images stay within ``eval_chunk_images`` (at least 1)."""
        if torch.is_grad_enabled() or self.eval_chunk_images is None:
            return batch
        return max(1, min(batch, self.eval_chunk_images // max(1, images_per_episode)))

    def episode_params(self, n_way: int) -> Params:
        """The parameters an N-way episode's inner loop starts from: the meta-parameters, with
        a zero head of ``n_way`` outputs when ``head_init="zero"`` or ``n_way`` differs from
        the head's width.

        Raises:
            ValueError: for another ``n_way`` when the network has no ``nn.Linear`` head.
        """
        params: dict[str, torch.Tensor] = dict(self.net.named_parameters())
        if self.head_init == "learned" and n_way == self.n_way:
            return params
        if self.head_name is None:
            raise ValueError(
                f"maml: this learner was built with n_way={self.n_way} and its network has no "
                f"nn.Linear head to re-initialise for n_way={n_way}"
            )
        w = params[f"{self.head_name}.weight"]
        params[f"{self.head_name}.weight"] = w.new_zeros(n_way, w.shape[1])
        bias = f"{self.head_name}.bias"
        if bias in params:
            params[bias] = params[bias].new_zeros(n_way)
        return params

    def adapt(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor, steps: int) -> Params:
        """Inner loop for ONE episode: ``steps`` SGD steps on the support cross-entropy.

        Args:
            params: the meta-parameters (name -> tensor).
            support_x: ``[S, C, H, W]``.
            support_y: int64 ``[S]``.
            steps: number of inner steps.

        Returns:
            The adapted parameters (differentiable w.r.t. ``params`` unless first order).
        """

        def support_loss(p: Params) -> torch.Tensor:
            return F.cross_entropy(functional_call(self.net, p, (support_x,)), support_y)

        if support_x.shape[0] == 0:  # nothing to adapt on
            return params
        for _ in range(steps):
            g = grad(support_loss)(params)
            if self.first_order:
                g = {k: v.detach() for k, v in g.items()}
            params = {k: params[k] - self.inner_lr * g[k] for k in params}
        return params

    def _episode_fn(self, query_groups: int = 1) -> Callable[[Params, torch.Tensor, torch.Tensor, torch.Tensor],
                                                              torch.Tensor]:
        steps = self.inner_steps if self.training else self.eval_inner_steps

        def episode(params: Params, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
            adapted = self.adapt(params, sx, sy, steps)
            if query_groups == 1:
                return functional_call(self.net, adapted, (qx,))
            batches = qx.unflatten(0, (qx.shape[0] // query_groups, query_groups)).transpose(0, 1)  # [G, N, ...]
            logits = vmap(lambda x: functional_call(self.net, adapted, (x,)))(batches)  # [G, N, N_out]
            return logits.transpose(0, 1).flatten(0, 1)

        return episode


@LEARNERS.register("maml")
@same_results("episode_batching", "train_chunk_images", "eval_chunk_images")
@forwards_to(MAML, drop=("net",))
def build_maml(
    *,
    n_way: int,
    image_shape: tuple[int, int, int],
    backbone: str = "conv4",
    backbone_channels: int | None = None,
    **options: Any,
) -> MAML:
    """MAML (Finn et al. 2017): backbone + linear head adapted per episode by inner SGD steps.

    ``backbone`` is a BACKBONES key, built with batch-statistics BatchNorm;
    ``backbone_channels`` sets the ``conv4`` width (None: 64; the paper uses 32 on
    mini-ImageNet). The other arguments are :class:`MAML`'s.
    """
    body = build_trunk(backbone, image_shape, backbone_channels, owner="maml", track_running_stats=False)
    net = nn.Sequential(body, nn.Linear(int(body.out_dim), n_way))
    return MAML(net, n_way=n_way, **options)
