"""LA-Net: Landmark-Aware Net (Wu & Cui, ICCV 2023), eq. 1-14.

Two branches over one ResNet: the stem and ``layer1`` are shared, ``layer2..4`` exist once for expressions
(``u``, the pooled expression feature) and once for landmarks (``v``, the pooled stride-4 map of a small
top-down pyramid). Training adds three terms to cross-entropy on the given labels (eq. 14)::

    L = L_ce + lm_weight * L_lm + alpha * L_kl + beta * L_el

* L_lm: landmark localisation, heatmaps + Adaptive Wing (the authors' release) or coordinates + MSE
  (the paper's text), switch ``landmark_head``.
* L_kl (eq. 1-7): label distribution estimation. Neighbours by cosine similarity inside the (global) batch
  in expression space and in landmark space, learned contribution scores, normalised aggregation of the
  neighbours' predictions, averaged over the two spaces, smoothed over epochs by a per-sample EMA memory.
* L_el (eq. 8-13): expression-landmark contrastive loss. Pseudo-labels from the EMA targets select positive
  pairs; MoCo-style momentum encoder and heads give keys; queues of keys give negatives.

Ablation switches (Table 2): ``LD`` (label distributions from expression space), ``LM`` (add landmark space
to LDE), ``EL`` (the contrastive loss), ``PL`` (pseudo-labels instead of the given labels for pair
selection). The landmark branch and L_lm are active when ``LM`` or ``EL`` is on; with every switch off the
method is the baseline.

Inference uses the expression branch alone: :meth:`LANet.export` returns the plain ResNet classifier.

The equations are pure functions in three modules, re-exported here: :mod:`.lanet_lde` (eq. 1-5: neighbours,
contribution scores, normalised weights, the EMA target), :mod:`.lanet_el` (eq. 8-13: pseudo-labels, positive
pairs, projection heads, the contrastive term) and :mod:`.lanet_landmarks` (the landmark pyramid, heatmap
targets, Adaptive Wing). This module holds the method: encoders, memory, queues, the loss of eq. 14 and its
diagnostics.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LanetError
from ..fileutil import atomic_open
from ..models.factory import create_model
from ..models.resnet import ResNet
from ..train.distributed import all_gather_cat, all_gather_with_grad, is_distributed
from .base import Batch, Method, MethodSpec
from .eac import class_activation_maps, flip_consistency, ramp_factor, random_erase
from .lanet_el import el_term, positive_mask, projection_head, pseudo_labels
from .lanet_landmarks import LandmarkPyramid, adaptive_wing_loss, gaussian_heatmaps, heatmap_peak_region
from .lanet_lde import (
    ContributionScore,
    aggregate,  # noqa: F401 - re-exported
    ema_target,
    knn,
    knn_memory,
    normalised_weights,
    sharpen,
    softmax_weights,
)
from .registry import register


# ------------------------------------------------------------------------------------------- method
@register
class LANet(Method):
    """LA-Net (ICCV 2023): landmark-aware label distributions + expression-landmark contrastive loss."""

    name = "lanet"
    needs_landmarks = True
    ddp_find_unused = True

    @dataclass
    class Params:
        K: int = 8  # neighbours per space
        omega: float = 0.9  # EMA decay of targets (eq. 5)
        tau: float = 0.1  # temperature (eq. 11-12)
        delta: float = 0.7  # pseudo-label confidence threshold (eq. 8)
        alpha: float = 1.0  # weight of L_kl
        beta: float = 0.1  # weight of L_el
        lm_weight: float = 1.0  # weight of L_lm
        queue_size: int = 8192
        momentum: float = 0.999
        landmark_head: str = "heatmap"  # heatmap (release, AWing) | regression (paper text, MSE)
        heatmap_sigma: float = 1.5
        batch_negatives: bool = False  # also use in-batch keys with other labels as negatives
        shuffle_bn: bool = True  # shuffle the key encoder's batch across processes (MoCo)
        LD: bool = True
        LM: bool = True
        EL: bool = True
        PL: bool = True
        warmup_epochs: int = 0  # epochs of CE (+ landmark loss) before LDE and EL start; 0 = the paper
        # -- variants beyond the paper (defaults = the paper's form; docs/methods.md describes them and their status)
        neighbours: str = "batch"  # batch (eq. 1-2 in the global batch) | memory (the whole training set)
        score_temperature: float = 0.0  # 0: eq. 4's c / sum(c); > 0: softmax(c / T) over the K neighbours
        sharpen: float = 1.0  # temperature on each space's aggregate before eq. 5 (1 = none, < 1 sharpens)
        consistency: float = 0.0  # weight of EAC's flip/erase CAM consistency on the expression branch (0 = off)
        erase_p: float = 0.5  # with consistency > 0: erasing probability of the mirrored view (EAC's)
        consistency_ramp: float = 0.0  # share of the run over which the consistency weight rises from 0 (EAC's ramp)
        label_weight: float = 1.0  # weight of eq. 6's CE on the given label once LDE is on (1 = the paper; 0: the
        # label distribution alone supervises, through eq. 7, so a flipped label stops being fitted as given)

    MAX_QUEUE = 1 << 20  # keys per queue (two queues of 1 M x 128 floats: 1 GB)

    @classmethod
    def check_params(cls, p: Params) -> None:
        """The hyperparameters' own ranges and the switches' dependencies."""
        if p.LM and not p.LD:
            raise LanetError("method.params.LM needs LD (landmark space is added to label distribution estimation)")
        if p.PL and p.EL and not p.LD:
            raise LanetError("method.params.PL needs LD (pseudo-labels come from the label distributions)")
        if p.landmark_head not in ("heatmap", "regression"):
            raise LanetError(f"method.params.landmark_head must be heatmap or regression, got {p.landmark_head!r}")
        if (not 0 <= p.omega < 1 or not 0 < p.momentum <= 1 or p.tau <= 0 or p.K < 1 or p.queue_size < 1
                or p.warmup_epochs < 0 or not 0 <= p.delta <= 1 or p.heatmap_sigma <= 0):
            raise LanetError(f"invalid LA-Net hyperparameters: {p}")
        if p.neighbours not in ("batch", "memory"):
            raise LanetError(f"method.params.neighbours must be batch or memory, got {p.neighbours!r}")
        if not (p.score_temperature >= 0 and math.isfinite(p.score_temperature)):
            raise LanetError(f"method.params.score_temperature must be 0 (eq. 4) or positive, "
                             f"got {p.score_temperature}")
        if not (0 < p.sharpen <= 10):
            raise LanetError(f"method.params.sharpen must be in (0, 10] (1 = no sharpening), got {p.sharpen}")
        if not (0 <= p.label_weight <= 1):
            raise LanetError(f"method.params.label_weight must be in [0, 1] (1 = the paper), got {p.label_weight}")
        if p.label_weight < 1 and not p.LD:
            raise LanetError("method.params.label_weight < 1 needs LD (the label distribution replaces the label)")
        if not (0 <= p.consistency < 1e4) or not 0 <= p.erase_p <= 1 or not 0 <= p.consistency_ramp <= 1:
            raise LanetError(f"method.params.consistency must be >= 0, erase_p and consistency_ramp in [0, 1], got "
                             f"{p.consistency}, {p.erase_p}, {p.consistency_ramp}")
        if p.queue_size > cls.MAX_QUEUE:
            raise LanetError(f"method.params.queue_size must be at most {cls.MAX_QUEUE}, got {p.queue_size}")

    @classmethod
    def check_config(cls, params: Params, cfg: Any) -> None:
        """:meth:`check_params`, and K against the batch: eq. 1-2 search K neighbours in the global batch,
        the sample itself excluded, so ``train.batch_size`` must be at least K + 1."""
        cls.check_params(params)
        if params.LD and params.K + 1 > cfg.train.batch_size:
            raise LanetError(f"method.params.K={params.K} neighbours need train.batch_size >= {params.K + 1} "
                             f"(the neighbours are searched in the batch, the image itself excluded), got "
                             f"{cfg.train.batch_size}")

    def __init__(self, spec: MethodSpec, params: dict | None = None):
        super().__init__(spec, params)
        p = self.params
        self.check_params(p)
        self.use_landmarks = p.LM or p.EL
        self.num_classes = spec.num_classes
        if self.use_landmarks and spec.num_landmarks == 0:
            raise LanetError("LA-Net's landmark branch needs landmarks (data.landmarks must not be 'none')")

        backbone = create_model(spec.arch, spec.num_classes, spec.in_chans, spec.dropout, spec.pretrained,
                                spec.width)
        enc = nn.ModuleDict({"backbone": backbone})
        dim_u, dim_v = backbone.num_features, backbone.stage_channels[0]  # 512 and 64 for ResNet-18
        if self.use_landmarks:
            # the landmark copies of layer2..4 start from the same (pretrained) weights
            enc["lm2"], enc["lm3"], enc["lm4"] = (copy.deepcopy(backbone.layer2), copy.deepcopy(backbone.layer3),
                                                  copy.deepcopy(backbone.layer4))
            enc["pyramid"] = LandmarkPyramid(backbone.stage_channels)
            if p.landmark_head == "heatmap":
                enc["lm_head"] = nn.Conv2d(dim_v, spec.num_landmarks, 1)
            else:
                enc["lm_head"] = nn.Linear(dim_v, 2 * spec.num_landmarks)
        if p.EL:
            enc["proj_u"] = projection_head(dim_u, dim_v)  # projections to 64 * expansion dims
            enc["proj_v"] = projection_head(dim_v, dim_v)
        self.encoder = enc
        if p.LD:
            self.score_u = ContributionScore(dim_u)
            if p.LM:
                self.score_v = ContributionScore(dim_v)
            labels = torch.as_tensor(np.asarray(spec.train_labels), dtype=torch.long)
            self.register_buffer("memory", F.one_hot(labels, spec.num_classes).float())  # num_train x C
            if p.neighbours == "memory":
                # the latest expression/landmark features and predictions of every training image
                n = len(labels)
                self.register_buffer("bank_u", torch.zeros(n, dim_u))
                self.register_buffer("bank_p", torch.zeros(n, spec.num_classes))
                self.register_buffer("bank_seen", torch.zeros(n, dtype=torch.bool))
                # clean labels of the visited images, for the neighbour-purity diagnostic only (never in a loss);
                # a buffer so that a resumed run reports the same numbers
                self.register_buffer("diag_clean_label", torch.full((n,), -1, dtype=torch.long))
                if p.LM:
                    self.register_buffer("bank_v", torch.zeros(n, dim_v))
        if p.EL:
            self.encoder_k = copy.deepcopy(self.encoder)
            for q in self.encoder_k.parameters():
                q.requires_grad_(False)
            d = dim_v
            self.register_buffer("queue_u", F.normalize(torch.randn(p.queue_size, d), dim=1))
            self.register_buffer("queue_v", F.normalize(torch.randn(p.queue_size, d), dim=1))
            self.register_buffer("queue_labels", torch.full((p.queue_size,), -1, dtype=torch.long))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._diag: dict[str, float] = {}
        self._pending_keys: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # ---------------------------------------------------------------------------------------- encoders
    def _encode(self, enc: nn.ModuleDict, x: torch.Tensor) -> dict[str, torch.Tensor]:
        bb: ResNet = enc["backbone"]  # type: ignore[assignment]
        c1 = bb.layer1(bb.stem(x))  # N x 64e x H/4
        fmap_u = bb.layer4(bb.layer3(bb.layer2(c1)))  # N x 512e x H/32
        u = bb.pool(fmap_u)  # N x 512e
        out = {"u": u, "logits": bb.forward_head(u), "fmap_u": fmap_u}
        if self.use_landmarks:
            c2 = enc["lm2"](c1)
            c3 = enc["lm3"](c2)
            c4 = enc["lm4"](c3)
            fmap = enc["pyramid"](c1, c2, c3, c4)  # N x 64e x H/4 x W/4
            out["v"] = bb.pool(fmap)  # N x 64e
            out["fmap"] = fmap
        return out

    @torch.no_grad()
    def _keys(self, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Momentum-encoder keys k^u, k^v for the whole global batch (M x D each), L2-normalised."""
        shuffle = self.params.shuffle_bn and is_distributed()
        if shuffle:
            # MoCo's shuffle BN: each process encodes a random share of the global batch
            xg = all_gather_cat(x)
            perm = torch.randperm(len(xg), generator=torch.Generator().manual_seed(seed)).to(x.device)
            n, r = len(x), dist.get_rank()
            x = xg[perm[r * n:(r + 1) * n]]
        out = self._encode(self.encoder_k, x)
        ku = F.normalize(self.encoder_k["proj_u"](out["u"].float()), dim=1)
        kv = F.normalize(self.encoder_k["proj_v"](out["v"].float()), dim=1)
        ku, kv = all_gather_cat(ku), all_gather_cat(kv)
        if shuffle:
            inv = torch.empty_like(perm)
            inv[perm] = torch.arange(len(perm), device=perm.device)
            ku, kv = ku[inv], kv[inv]
        return ku, kv

    # ---------------------------------------------------------------------------------------- losses
    def _landmark_loss(self, out: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        pts = batch.landmarks.float()  # N x P x 2, input pixels
        valid = (batch.landmark_found.float() if batch.landmark_found is not None
                 else torch.ones(len(pts), device=pts.device))  # fallback-box landmarks are not supervised
        head = self.encoder["lm_head"]
        size = batch.images.shape[-1]
        if self.params.landmark_head == "heatmap":
            pred = head(out["fmap"]).float()  # N x P x h x w
            stride = size / pred.shape[-1]
            target = gaussian_heatmaps(pts, pred.shape[-2:], stride, self.params.heatmap_sigma)
            near = heatmap_peak_region(pts, pred.shape[-2:], stride, self.params.heatmap_sigma).float()
            weight = (1 + 9 * near) * valid[:, None, None, None]
            return adaptive_wing_loss(pred, target, weight) / valid.mean().clamp(min=1e-6)
        pred = head(out["v"].float()).view(len(pts), -1, 2)  # N x P x 2, normalised coordinates
        err = ((pred - pts / size) ** 2).mean((1, 2))
        return (err * valid).sum() / valid.sum().clamp(min=1)

    def lde_active(self, epoch: int) -> bool:
        """Whether LDE and the EL loss are on at ``epoch`` (0-based): after ``warmup_epochs`` epochs of CE."""
        return epoch >= self.params.warmup_epochs

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        out = self._encode(self.encoder, batch.images)
        logits = out["logits"].float()
        ce = F.cross_entropy(logits, batch.labels)  # eq. 6
        loss = ce
        logs: dict[str, torch.Tensor] = {"ce": ce.detach()}
        if self.use_landmarks and p.lm_weight > 0:
            l_lm = self._landmark_loss(out, batch)
            loss = loss + p.lm_weight * l_lm
            logs["lm"] = l_lm.detach()
        if p.consistency > 0:
            l_cons = self._consistency(out["fmap_u"], batch)
            loss = loss + p.consistency * ramp_factor(p.consistency_ramp, batch.step, batch.total_steps) * l_cons
            logs["flip_consistency"] = l_cons.detach()
        if not self.lde_active(batch.epoch):
            return loss, logs  # warm-up: cross-entropy (and the landmark loss) only

        target = None
        if p.LD:
            if p.label_weight != 1:  # variant: eq. 6 down-weighted once the label distributions exist
                loss = loss - (1 - p.label_weight) * ce
            target = self._label_distribution(out, logits, batch)
            l_kl = F.kl_div(F.log_softmax(logits, 1), target, reduction="batchmean")  # eq. 7
            loss = loss + p.alpha * l_kl
            logs["kl"] = l_kl.detach()

        if p.EL:
            if p.PL:
                pl = pseudo_labels(target.detach(), p.delta, batch.index, self.num_classes)
            else:
                pl = batch.labels
            pl_all = all_gather_cat(pl)
            qu = F.normalize(self.encoder["proj_u"](out["u"].float()), dim=1)  # N x D, eq. 10
            qv = F.normalize(self.encoder["proj_v"](out["v"].float()), dim=1)
            ku, kv = self._keys(batch.images, seed=batch.step)  # M x D
            # the queues are read here and written in after_step (after backward), so no copy is needed
            l1 = el_term(qu, kv, self.queue_v, pl, pl_all, self.queue_labels, p.tau, p.batch_negatives)  # eq. 11
            l2 = el_term(qv, ku, self.queue_u, pl, pl_all, self.queue_labels, p.tau, p.batch_negatives)  # eq. 12
            l_el = l1 + l2  # eq. 13
            loss = loss + p.beta * l_el
            logs["el"] = l_el.detach()
            self._pending_keys = (ku, kv, pl_all)
            self._pseudo_label_diagnostics(pl, pl_all, batch)
        return loss, logs

    def _consistency(self, fmap: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Variant (switch ``consistency``): EAC's loss on the expression branch. The mirrored image, randomly
        erased as in EAC, goes through the backbone; its class activation maps, flipped back, must match those of
        the training view (MSE; classifier weights detached, :mod:`lanet.methods.eac`)."""
        bb: ResNet = self.encoder["backbone"]  # type: ignore[assignment]
        g = torch.Generator().manual_seed(3_000_017 * 13 + int(batch.step))
        mirrored = random_erase(torch.flip(batch.images, dims=[3]), g, self.params.erase_p)
        f2 = bb.forward_features(mirrored)  # N x 512e x h x w
        w = bb.fc.weight.float()
        return flip_consistency(class_activation_maps(fmap.float(), w), class_activation_maps(f2.float(), w))

    def _weights(self, scores: torch.Tensor) -> torch.Tensor:
        """Eq. 4's normalisation of contribution scores, or its softmax variant (``score_temperature``)."""
        t = self.params.score_temperature
        return normalised_weights(scores) if t == 0 else softmax_weights(scores, t)

    def _label_distribution(self, out: dict[str, torch.Tensor], logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Eq. 1-5 for this process's samples, neighbours searched in the global batch (or, with
        ``neighbours=memory``, the whole training set); updates the memory."""
        p = self.params
        if p.neighbours == "memory":
            return self._label_distribution_memory(out, logits, batch)
        n = len(logits)
        offset = dist.get_rank() * n if is_distributed() else 0
        self_index = torch.arange(n, device=logits.device) + offset
        probs_all = all_gather_with_grad(logits.softmax(1))  # M x C
        u_all = all_gather_with_grad(out["u"].float())
        nb_u = knn(out["u"], u_all, p.K, self_index)
        scores = {"u": self.score_u(out["u"].float(), u_all, nb_u)}  # N x K
        current = self._aggregate(scores["u"], probs_all[nb_u])
        if p.LM:
            v_all = all_gather_with_grad(out["v"].float())
            nb_v = knn(out["v"], v_all, p.K, self_index)
            scores["v"] = self.score_v(out["v"].float(), v_all, nb_v)
            current = 0.5 * (current + self._aggregate(scores["v"], probs_all[nb_v]))
        target = ema_target(self.memory[batch.index], current, p.omega)  # eq. 5
        self._check_distribution(target, batch)
        self._update_memory(batch.index, target.detach())
        self._target_diagnostics(target.detach(), scores, batch, current.detach(), logits.detach())
        self._neighbour_diagnostics({"u": nb_u, **({"v": nb_v} if p.LM else {})}, batch)
        return target

    def _aggregate(self, scores: torch.Tensor, nb_probs: torch.Tensor) -> torch.Tensor:
        """One space's term of eq. 4 from scores N x K and the neighbours' predictions N x K x C, sharpened
        when ``sharpen`` < 1 (rows sum to 1 either way)."""
        w = self._weights(scores)  # N x K
        return sharpen((w[..., None] * nb_probs.float()).sum(1), self.params.sharpen)  # N x C

    def _label_distribution_memory(self, out: dict[str, torch.Tensor], logits: torch.Tensor,
                                   batch: Batch) -> torch.Tensor:
        """Eq. 1-5 with neighbours from a memory of the whole training set (variant ``neighbours=memory``).

        The memory holds each training image's latest features u, v and prediction, written at every visit
        (the global batch's are written first, so they are fresh). Every class then has candidates whatever the
        batch holds; the neighbours' predictions are remembered values (no gradient reaches the neighbours'
        logits, unlike in-batch eq. 4), while the score networks train as before."""
        p = self.params
        u = out["u"].float()
        self._remember(batch.index, u, out["v"].float() if p.LM else None, logits.softmax(1))
        nb_u = knn_memory(u, self.bank_u, p.K, batch.index, self.bank_seen)  # N x K training indices
        scores = {"u": self.score_u.score_rows(u, self.bank_u[nb_u])}
        current = self._aggregate(scores["u"], self.bank_p[nb_u])
        nbs = {"u": nb_u}
        if p.LM:
            v = out["v"].float()
            nb_v = knn_memory(v, self.bank_v, p.K, batch.index, self.bank_seen)
            scores["v"] = self.score_v.score_rows(v, self.bank_v[nb_v])
            current = 0.5 * (current + self._aggregate(scores["v"], self.bank_p[nb_v]))
            nbs["v"] = nb_v
        target = ema_target(self.memory[batch.index], current, p.omega)  # eq. 5
        self._check_distribution(target, batch)
        self._update_memory(batch.index, target.detach())
        self._target_diagnostics(target.detach(), scores, batch, current.detach(), logits.detach())
        self._memory_neighbour_diagnostics(nbs, batch)
        return target

    @torch.no_grad()
    def _remember(self, index: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None, probs: torch.Tensor) -> None:
        """Write the global batch's features and predictions into the training-set memory."""
        idx = all_gather_cat(index)
        self.bank_u[idx] = all_gather_cat(u.detach())
        self.bank_p[idx] = all_gather_cat(probs.detach().float())
        if v is not None:
            self.bank_v[idx] = all_gather_cat(v.detach())
        self.bank_seen[idx] = True

    @torch.no_grad()
    def _memory_neighbour_diagnostics(self, neighbours: dict[str, torch.Tensor], batch: Batch) -> None:
        """Neighbour purity for memory neighbours (training indices), from the run's clean training labels."""
        if batch.clean_labels is None:
            return
        clean = self.diag_clean_label
        clean[all_gather_cat(batch.index)] = all_gather_cat(batch.clean_labels)
        for space, nb in neighbours.items():
            known = clean[nb] >= 0  # N x K (every neighbour was visited, so its label is known)
            same = (clean[nb] == batch.clean_labels[:, None]) & known
            self._accumulate(f"neighbour_purity_{space}", same.sum(), known.sum())

    # ---------------------------------------------------------------------------------------- invariants
    @torch.no_grad()
    def _check_distribution(self, target: torch.Tensor, batch: Batch) -> None:
        """Every target row is a probability distribution (sums to 1 within 1e-3); stop the run otherwise."""
        row = target.detach().sum(1)
        drift = float((row - 1).abs().max())
        if not drift <= 1e-3:  # also catches NaN
            worst = int((row - 1).abs().argmax())
            raise LanetError(f"LA-Net label distribution of training image {int(batch.index[worst])} sums to "
                             f"{float(row[worst]):.6f}, not 1 (epoch {batch.epoch + 1}, step {batch.step}): the "
                             f"targets lost probability mass; this is a defect, please report it")

    # ---------------------------------------------------------------------------------------- state updates
    # ---------------------------------------------------------------------------------------- state updates
    @torch.no_grad()
    def _update_memory(self, index: torch.Tensor, target: torch.Tensor) -> None:
        self.memory[all_gather_cat(index)] = all_gather_cat(target)

    @torch.no_grad()
    def _enqueue(self, ku: torch.Tensor, kv: torch.Tensor, labels: torch.Tensor) -> None:
        """Write the global batch's keys at the queue pointer, wrapping around the end."""
        size = self.queue_u.shape[0]
        m = min(len(ku), size)
        slots = (self.queue_ptr + torch.arange(m, device=ku.device)) % size
        self.queue_u[slots] = ku[-m:]
        self.queue_v[slots] = kv[-m:]
        self.queue_labels[slots] = labels[-m:]
        self.queue_ptr.copy_((self.queue_ptr + m) % size)

    @torch.no_grad()
    def after_step(self, batch: Batch) -> None:
        """Momentum update of the key encoder and heads; BatchNorm buffers copied from the query network."""
        if not self.params.EL:
            return
        pending, self._pending_keys = self._pending_keys, None
        if pending is not None:
            self._enqueue(*pending)
        m = self.params.momentum
        pk = list(self.encoder_k.parameters())
        torch._foreach_mul_(pk, m)
        torch._foreach_add_(pk, [q.detach() for q in self.encoder.parameters()], alpha=1 - m)
        torch._foreach_copy_(list(self.encoder_k.buffers()), list(self.encoder.buffers()))

    # ---------------------------------------------------------------------------------------- reporting
    def _accumulate(self, key: str, num: torch.Tensor | float, den: torch.Tensor | float = 1.0) -> None:
        """Add ``num / den`` to the epoch's ratio ``key`` (summed separately, so batch sizes weigh right)."""
        self._diag[key] = self._diag.get(key, 0.0) + float(num)
        self._diag[key + "#"] = self._diag.get(key + "#", 0.0) + float(den)

    def _minimum(self, key: str, value: torch.Tensor | float) -> None:
        self._diag[key + "@min"] = min(self._diag.get(key + "@min", math.inf), float(value))

    @torch.no_grad()
    def _target_diagnostics(self, target: torch.Tensor, scores: dict[str, torch.Tensor], batch: Batch,
                            vote: torch.Tensor | None = None, logits: torch.Tensor | None = None) -> None:
        """Per-epoch numbers that show whether LDE works: mass, sharpness, scores, and label correction. With the
        clean labels, also its ceiling: ``vote`` (this step's neighbour aggregate, eq. 4, before the EMA) and the
        network's own ``logits`` on the training view, each against the clean label. The EMA target follows the
        vote, so it can only clean labels where the vote is right more often than the given label."""
        n = len(target)
        row = target.sum(1)
        self._accumulate("target_row_sum_mean", row.sum(), n)
        self._minimum("target_row_sum_min", row.min())
        conf, arg = target.max(1)
        self._accumulate("target_max", conf.sum(), n)
        self._accumulate("target_confident", (conf >= self.params.delta).sum(), n)
        self._accumulate("target_agrees_train_label", (arg == batch.labels).sum(), n)
        for space, c in scores.items():
            c = c.detach().float()
            w = self._weights(c)
            self._accumulate(f"score_{space}_mean", c.mean())
            self._minimum(f"score_{space}_min", c.min())
            # entropy of the aggregation weights: ln K = uniform, 0 = one neighbour takes everything
            self._accumulate(f"weight_{space}_entropy", -(w * w.clamp(min=1e-30).log()).sum(1).sum(), n)
        if batch.clean_labels is not None:
            clean = batch.clean_labels
            flipped = batch.labels != clean
            self._accumulate("target_agrees_clean_label", (arg == clean).sum(), n)
            if vote is not None:
                self._accumulate("vote_agrees_clean_label", (vote.argmax(1) == clean).sum(), n)
            if logits is not None:
                self._accumulate("prediction_agrees_clean_label", (logits.argmax(1) == clean).sum(), n)
            self._accumulate("train_label_is_clean", (~flipped).sum(), n)
            # label correction: flipped labels whose target now points at the clean class
            self._accumulate("target_corrects_flipped", (flipped & (arg == clean)).sum(), flipped.sum())
            # harm: clean labels whose target moved to another class
            self._accumulate("target_moves_clean", (~flipped & (arg != clean)).sum(), (~flipped).sum())

    @torch.no_grad()
    def _neighbour_diagnostics(self, neighbours: dict[str, torch.Tensor], batch: Batch) -> None:
        """Neighbour purity per space: the share of an anchor's K neighbours whose clean label equals the
        anchor's clean label (u: expression space, v: landmark space). Needs the clean labels (diagnostics)."""
        if batch.clean_labels is None:
            return
        clean = batch.clean_labels
        clean_all = all_gather_cat(clean)  # M, aligned with the global batch the neighbours index
        for space, nb in neighbours.items():
            same = clean_all[nb] == clean[:, None]  # N x K
            self._accumulate(f"neighbour_purity_{space}", same.sum(), same.numel())

    @torch.no_grad()
    def _pseudo_label_diagnostics(self, pl: torch.Tensor, pl_all: torch.Tensor, batch: Batch) -> None:
        """Confident pseudo-labels, their correction/harm rates, and the precision of the EL positive pairs."""
        c = self.num_classes
        confident = pl < c
        self._accumulate("confident", confident.sum(), len(pl))
        if batch.clean_labels is None:
            return
        clean = batch.clean_labels
        flipped = batch.labels != clean
        self._accumulate("pseudo_corrects_flipped", (flipped & confident & (pl == clean)).sum(), flipped.sum())
        self._accumulate("pseudo_moves_clean", (~flipped & confident & (pl != clean)).sum(), (~flipped).sum())
        clean_all = all_gather_cat(clean)
        offset = dist.get_rank() * len(pl) if is_distributed() else 0
        pos = positive_mask(pl, pl_all)  # N x M
        pos[torch.arange(len(pl), device=pl.device), torch.arange(len(pl), device=pl.device) + offset] = False
        same = clean[:, None] == clean_all[None, :]
        # precision of the positive pairs other than a sample's own view: do the pair's clean labels agree?
        self._accumulate("positive_pair_precision", (pos & same).sum(), pos.sum())
        self._accumulate("positive_pairs_per_anchor", pos.sum(), len(pl))

    def epoch_diagnostics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in self._diag.items():
            if k.endswith("@min"):
                out[k[:-4]] = v
            elif not k.endswith("#"):
                den = self._diag[k + "#"]
                if den > 0:  # e.g. no flipped label in a clean run: the ratio is left out, not NaN
                    out[k] = v / den
        self._diag = {}
        return out

    def export(self) -> ResNet:
        return self.encoder["backbone"]  # type: ignore[return-value]

    def save_artifacts(self, run_dir: str | Path) -> None:
        """The final EMA label distributions, one row per training image (training-split order)."""
        if self.params.LD:
            rows = self.memory.sum(1)
            if float((rows - 1).abs().max()) > 1e-3:
                raise LanetError(f"LA-Net label distributions do not sum to 1 (min {float(rows.min()):.4f}, "
                                 f"max {float(rows.max()):.4f}); not saving them")
            with atomic_open(Path(run_dir) / "label_distributions.npz", "wb") as fh:  # never through a link
                np.savez_compressed(fh, distributions=self.memory.cpu().numpy(),
                                    train_labels=np.asarray(self.spec.train_labels),
                                    names=np.asarray(self.spec.train_names if self.spec.train_names is not None
                                                     else [], dtype=str))
