"""ReSup: Beta-mixture noise modelling with two networks that swap decisions (Zhang, Lu, Yan, Huang, Ji & Gu,
"ReSup: Reliable Label Noise Suppression for Facial Expression Recognition", IEEE TAFFC 2025; arXiv 2305.17895).

Two networks of the same architecture train side by side on the same augmented batch. Every training sample
``i`` is scored by how well network ``k``'s prediction agrees with its given label::

    s_i^k = cos(onehot(y_i), p_i^k) = p_i^k[y_i] / ||p_i^k||_2          in (0, 1]

A two-component Beta mixture fitted to network ``k``'s scores over the training set (EM, 10 iterations, M-step by
weighted method of moments: ``xbar = sum r x / sum r``, ``s2 = sum r (x - xbar)^2 / sum r``,
``alpha = xbar (xbar (1 - xbar) / s2 - 1)``, ``beta = alpha (1 - xbar) / xbar``) gives ``P(clean | s)``, tabulated
at 100 points of (0, 1) and held at its maximum from the argmax on; ``w_i^k = table_k[floor(100 s_i^k)]``.
After one warm-up epoch of plain CE on both networks, each network's CE is weighted by the *other* network's
clean probability (a decision swap, as in co-teaching), plus a consistency term over C classes::

    L = mean_i [ w_i^2 CE(z_i^1, y_i) + w_i^1 CE(z_i^2, y_i) + 5 * (1/C) ||p_i^1 - p_i^2||^2 ]

The weights are soft: no sample is dropped. The mixtures are refitted after every epoch. Inference uses network 1
alone (:meth:`ReSup.export`; the release selects its checkpoint on network 1 and does not ensemble).

Details decided here (from the authors' release at ``purpleleaves007/FERDenoise`` 0eb4353, which has no licence:
written from its facts, nothing copied):

* **Scores come from the training forward, not from an extra pass.** The release re-runs both networks over the
  whole training set after each epoch (eval mode, training augmentation) to score it. The trainer has no hook
  for such a pass, and the training forward already computes ``p``: each step stores the (detached) scores of
  its samples in the per-sample buffer ``scores`` (2 x num_train), and the mixtures are refitted on that buffer
  when the epoch changes (in :meth:`epoch_diagnostics`, which the trainer calls after every epoch, or, should
  it not be called, at the first step of the next epoch: the fit is idempotent, so both give the same state).
  This saves the release's extra third of an epoch; the scores are those of the network as it was when it saw
  the sample during the epoch (train mode: dropout, batch statistics), not of the end-of-epoch network. A
  sample not visited in an epoch (the trainer drops the last partial batch; balanced sampling skips some
  images) keeps its last score; a sample never scored yet is weighted through its current score.
* **The clean component is the one with the larger mean** ``alpha / (alpha + beta)``. The release always takes
  the component initialised at (alpha, beta) = (2, 1) (near 1) and never checks whether EM swapped the
  components. Swapped, its table would be the noisy component's posterior (inverted), which peaks near s = 0;
  held at that maximum from there on, it would give every sample a weight of ~1 and suppress nothing. The
  evident intent is that the high-score component is clean.
  ``resup_net{k}_swapped`` reports when the check changed the choice.
* Guards the release lacks: ``s2`` is floored at 1e-8 and ``alpha``, ``beta`` at 1e-3 (a degenerate component
  would otherwise give NaN or a negative shape); the posterior is computed in log space (float64).
* Scores are clipped to [0.001, 0.999] (the release clips to that, then to [1e-4, 1 - 1e-4] in the fit, which
  the first clip already satisfies); EM starts each refit from (1, 2), (2, 1), mixing 0.5 / 0.5, and floors the
  weighted likelihoods at 1e-12 before normalising; weights are clipped to [1e-4, 1 - 1e-4] after the lookup.
  Scores, fit and lookup are tensors on the training device, detached, vectorised (the release loops over
  samples in Python through numpy).
* **Network 2's initialisation** (``net2_init``): the release starts network 1 from MS-Celeb-1M and network 2
  from ImageNet only, which this project does not have. ``"same"`` (default) builds network 2 from the same
  ``model.pretrained`` weights as network 1; ``"random"`` starts network 2 from random weights whatever
  ``model.pretrained`` says, the closest this harness has to the release's different start. Network 2's
  classifier is always freshly initialised, even where the pretrained file holds one of the right shape: two
  identical networks trained on the same batches with this symmetric loss would stay identical, and the swap
  would do nothing. With no pretrained weights the two networks are independently random.
* The consistency term is not detached on either side (as released) and is the mean over batch and classes
  times ``cons_weight`` (= ``cons_weight / C`` times the per-sample squared distance). It is off during warm-up,
  as in the release.
* Under torchrun each process computes its share's loss (DistributedDataParallel averages the gradients); the
  scores of the global batch are gathered, so every process holds the same score buffer and fits the same
  mixtures without further communication. All per-sample buffers and the fitted mixtures are registered
  buffers (in the state dict), so checkpoints and ``--resume`` carry them bit for bit.
* The release's recipe (Adam 2e-4, step decay, 30 epochs, batch 96) is not reproduced: the trainer is shared by
  every method.

Diagnostics per epoch: for each network ``k`` the fitted mixture (``resup_net{k}_clean_alpha``, ``_clean_beta``,
``_clean_pi``, ``_noisy_alpha``, ``_noisy_beta``, ``_noisy_pi``, ``_swapped``) and ``resup_net{k}_score_mean``;
and, from the epoch after warm-up on, over the weights applied during the epoch (this process's share; they
come from the mixtures fitted after the previous epoch) ``resup_w{k}_mean`` and, where the dataset's labels are
known (diagnostics only, never in a loss), ``resup_w{k}_flipped`` / ``resup_w{k}_clean`` (mean clean probability
of samples whose training label was flipped / kept) and ``resup_w{k}_flipped_below_half`` (share of flipped
labels with ``w < 0.5``). ``w1`` is network 1's clean probability, the weight of network 2's CE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import LanetError
from ..models.factory import create_model
from ..models.resnet import ResNet
from ..train.distributed import all_gather_cat
from .base import Batch, Method, MethodSpec
from .registry import register

SCORE_CLIP = (1e-3, 1 - 1e-3)  # scores before the fit and the lookup
WEIGHT_CLIP = (1e-4, 1 - 1e-4)  # weights after the lookup, and the ends of the lookup grid
LIKELIHOOD_FLOOR = 1e-12  # E-step floor of the weighted likelihoods
INIT = ((1.0, 2.0), (2.0, 1.0))  # (alpha, beta) of components 0 and 1 at the start of each fit
VAR_FLOOR, SHAPE_FLOOR = 1e-8, 1e-3  # guards of the method of moments


def agreement_score(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """s = cos(onehot(y), p) = p[y] / ||p||_2 for probs N x C and labels N: N values in (0, 1]."""
    return probs.gather(1, labels[:, None]).squeeze(1) / probs.norm(dim=1)


def beta_log_pdf(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """log Beta(x; alpha, beta), broadcasting x (N x 1) against alpha, beta (K) -> N x K."""
    log_norm = torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)
    return (alpha - 1) * torch.log(x) + (beta - 1) * torch.log1p(-x) - log_norm


def weighted_moments(x: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted method of moments for each component: x N, responsibilities r N x K -> (alpha K, beta K)."""
    total = r.sum(0)  # K
    xbar = (r * x[:, None]).sum(0) / total
    s2 = (r * (x[:, None] - xbar) ** 2).sum(0) / total
    alpha = xbar * (xbar * (1 - xbar) / s2.clamp_min(VAR_FLOOR) - 1)
    alpha = alpha.clamp_min(SHAPE_FLOOR)
    beta = (alpha * (1 - xbar) / xbar).clamp_min(SHAPE_FLOOR)
    return alpha, beta


def log_weighted_likelihood(x: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """log(pi_k Beta(x; alpha_k, beta_k)) for x N and mixture K x 3 (alpha, beta, pi) -> N x K."""
    return beta_log_pdf(x[:, None], mixture[:, 0], mixture[:, 1]) + torch.log(mixture[:, 2])


def fit_beta_mixture(x: torch.Tensor, iters: int = 10,
                     init: tuple[tuple[float, float], ...] = INIT) -> torch.Tensor:
    """EM for a 2-component Beta mixture on scores x (N, clipped to SCORE_CLIP, float64): the fitted mixture as a
    K x 3 tensor of rows (alpha, beta, pi), in the components' initial order."""
    x = x.double().clamp(*SCORE_CLIP)
    k = len(init)
    mixture = torch.tensor([[a, b, 1.0 / k] for a, b in init], dtype=torch.float64, device=x.device)
    for _ in range(iters):
        lik = log_weighted_likelihood(x, mixture).exp().clamp_min(LIKELIHOOD_FLOOR)  # E-step, N x K
        r = lik / lik.sum(1, keepdim=True)
        alpha, beta = weighted_moments(x, r)  # M-step
        pi = r.sum(0) / r.sum()
        mixture = torch.stack([alpha, beta, pi], dim=1)
    return mixture


def clean_component(mixture: torch.Tensor) -> int:
    """The component whose mean alpha / (alpha + beta) is the larger: high agreement = clean."""
    return int(torch.argmax(mixture[:, 0] / (mixture[:, 0] + mixture[:, 1])))


def clean_posterior(x: torch.Tensor, mixture: torch.Tensor, clean: int) -> torch.Tensor:
    """P(clean | x) for x N under the fitted mixture K x 3, in log space: N."""
    log_w = log_weighted_likelihood(x.double(), mixture)
    return (log_w[:, clean] - torch.logsumexp(log_w, dim=1)).exp()


def clean_lookup(mixture: torch.Tensor, clean: int, bins: int = 100) -> torch.Tensor:
    """P(clean | s) at ``bins`` evenly spaced points of [1e-4, 1 - 1e-4], held at its maximum from the argmax
    on (so a higher score never gets a lower weight past the peak): ``bins`` float64 values."""
    grid = torch.linspace(WEIGHT_CLIP[0], WEIGHT_CLIP[1], bins, dtype=torch.float64, device=mixture.device)
    table = clean_posterior(grid, mixture, clean)
    peak = int(torch.argmax(table))
    table[peak:] = table[peak]
    return table


def look_up(table: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """w = table[floor(bins * s)] for scores s (clipped to SCORE_CLIP), clipped to WEIGHT_CLIP: float32."""
    bins = table.shape[-1]
    idx = (scores.clamp(*SCORE_CLIP) * bins).long().clamp(0, bins - 1)
    return table[idx].clamp(*WEIGHT_CLIP).float()


@register
class ReSup(Method):
    """ReSup (TAFFC 2025): two networks, each one's CE weighted by the other's Beta-mixture clean probability."""

    name = "resup"

    @dataclass
    class Params:
        cons_weight: float = 5.0  # weight of the consistency term (mean squared distance over C classes)
        warmup_epochs: int = 1  # epochs of plain CE on both networks before the weights start
        em_iters: int = 10  # EM iterations per refit
        lookup_bins: int = 100  # points of the P(clean | s) table
        net2_init: str = "same"  # "same": model.pretrained as network 1; "random": random init

    def __init__(self, spec: MethodSpec, params: dict | None = None):
        super().__init__(spec, params)
        p = self.params
        if p.cons_weight < 0 or p.warmup_epochs < 1 or p.em_iters < 1 or p.lookup_bins < 2:
            raise LanetError(f"invalid ReSup hyperparameters (cons_weight >= 0, warmup_epochs >= 1, em_iters >= 1, "
                             f"lookup_bins >= 2): {p}")
        if p.net2_init not in ("same", "random"):
            raise LanetError(f"resup: method.params.net2_init must be 'same' or 'random', got {p.net2_init!r}")
        args = (spec.arch, spec.num_classes, spec.in_chans, spec.dropout)
        self.net1 = create_model(*args, spec.pretrained, spec.width)
        self.net2 = create_model(*args, spec.pretrained if p.net2_init == "same" else "", spec.width)
        self.net2.fc.reset_parameters()  # its own classifier, even where the pretrained file holds a matching one
        n = spec.num_train
        self.register_buffer("scores", torch.zeros(2, n))  # latest agreement score of each sample, per network
        self.register_buffer("score_epoch", torch.full((n,), -1, dtype=torch.long))  # epoch last scored, -1: never
        self.register_buffer("scored_epoch", torch.tensor(-1))  # latest epoch with recorded scores
        self.register_buffer("fitted_epoch", torch.tensor(-1))  # epoch whose scores the mixtures were fitted on
        self.register_buffer("mixture", torch.tensor([[[a, b, 0.5] for a, b in INIT]] * 2, dtype=torch.float64))
        self.register_buffer("clean", torch.ones(2, dtype=torch.long))  # index of the clean component per network
        self.register_buffer("lookup", torch.ones(2, p.lookup_bins, dtype=torch.float64))  # P(clean | s) tables
        self._diag: dict[str, torch.Tensor] = {}
        self._checked_epoch = -1  # the epoch whose first step checked the fit (Python side: no sync per step)

    # ---------------------------------------------------------------------------------------- the mixtures
    @torch.no_grad()
    def refit(self) -> None:
        """Fit both networks' mixtures to the recorded scores, if newer scores than the last fit exist."""
        if int(self.scored_epoch) <= int(self.fitted_epoch):
            return
        seen = self.score_epoch >= 0
        with torch.autocast(self.scores.device.type, enabled=False):  # float64 throughout, also under --amp
            self._fit(seen)
        self.fitted_epoch.copy_(self.scored_epoch)

    def _fit(self, seen: torch.Tensor) -> None:
        for k in range(2):
            mixture = fit_beta_mixture(self.scores[k, seen], self.params.em_iters)
            clean = clean_component(mixture)
            self.mixture[k] = mixture
            self.clean[k] = clean
            self.lookup[k] = clean_lookup(mixture, clean, self.params.lookup_bins)

    @torch.no_grad()
    def clean_probability(self, index: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Both networks' clean probabilities (2 x N) of training samples ``index`` (N) from their recorded scores;
        ``current`` (2 x N, this step's scores) stands in for samples never scored before."""
        s = torch.where(self.score_epoch[index] >= 0, self.scores[:, index], current)
        return torch.stack([look_up(self.lookup[k], s[k]) for k in range(2)])

    @torch.no_grad()
    def record_scores(self, index: torch.Tensor, scores: torch.Tensor, epoch: int) -> None:
        """Store this step's scores (2 x N) of samples ``index`` (N); under torchrun those of the global batch."""
        index, scores = all_gather_cat(index), all_gather_cat(scores.t().contiguous()).t()
        self.scores[:, index] = scores
        self.score_epoch[index] = epoch
        self.scored_epoch.fill_(epoch)

    # ---------------------------------------------------------------------------------------- training step
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p, y = self.params, batch.labels
        z1, z2 = self.net1(batch.images).float(), self.net2(batch.images).float()  # N x C each
        p1, p2 = z1.softmax(1), z2.softmax(1)
        ce1 = F.cross_entropy(z1, y, reduction="none")  # N
        ce2 = F.cross_entropy(z2, y, reduction="none")
        with torch.no_grad():
            current = torch.stack([agreement_score(p1, y), agreement_score(p2, y)])  # 2 x N
        logs: dict[str, torch.Tensor] = {"ce_net1": ce1.mean().detach(), "ce_net2": ce2.mean().detach()}
        if batch.epoch < p.warmup_epochs:
            loss = (ce1 + ce2).mean()
        else:
            if self._checked_epoch != batch.epoch:  # the first step of an epoch: fit the last epoch's scores
                self.refit()  # (a no-op when epoch_diagnostics has fitted them already)
                self._checked_epoch = batch.epoch
            w = self.clean_probability(batch.index, current)  # 2 x N, detached
            consistency = F.mse_loss(p1, p2)  # (1/C) ||p1 - p2||^2, averaged over the batch
            loss = (w[1] * ce1 + w[0] * ce2).mean() + p.cons_weight * consistency
            logs["consistency"] = consistency.detach()
            self._tally(w, batch)
        self.record_scores(batch.index, current, batch.epoch)
        return loss, logs

    # ---------------------------------------------------------------------------------------- reporting
    def _tally(self, w: torch.Tensor, batch: Batch) -> None:
        """Accumulate the applied weights per group on the device (sum, count, count below 0.5)."""
        groups = {"mean": torch.ones_like(batch.labels, dtype=torch.bool)}
        if batch.clean_labels is not None:
            flipped = batch.labels != batch.clean_labels
            groups.update(flipped=flipped, clean=~flipped)
        for key, mask in groups.items():
            m = mask.float()
            add = torch.stack([(w * m).sum(1), m.sum().expand(2), ((w < 0.5).float() * m).sum(1)])  # 3 x 2
            self._diag[key] = self._diag[key] + add if key in self._diag else add

    def epoch_diagnostics(self) -> dict[str, float]:
        self.refit()
        out: dict[str, float] = {}
        seen = self.score_epoch >= 0
        for k in range(2):
            mix, clean = self.mixture[k].tolist(), int(self.clean[k])
            for role, c in (("clean", clean), ("noisy", 1 - clean)):
                for j, name in enumerate(("alpha", "beta", "pi")):
                    out[f"resup_net{k + 1}_{role}_{name}"] = mix[c][j]
            out[f"resup_net{k + 1}_swapped"] = float(clean != 1)
            if bool(seen.any()):
                out[f"resup_net{k + 1}_score_mean"] = float(self.scores[k, seen].mean())
        for key, t in self._diag.items():
            wsum, count, below = t.tolist()
            for k in range(2):
                if count[k] > 0:
                    out[f"resup_w{k + 1}_{key}"] = wsum[k] / count[k]
                    if key == "flipped":
                        out[f"resup_w{k + 1}_flipped_below_half"] = below[k] / count[k]
        self._diag = {}
        return out

    def export(self) -> ResNet:
        return self.net1
