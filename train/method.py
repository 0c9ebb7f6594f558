"""The method: RPM-Distill's label-optional objective and the KD baselines it is compared with.

Eq. 1 of the paper, per batch:
    L = 1[labelled] * L_sup + lambda * g * sum_k alpha_k L_k
with L_sup = 0.01 * neg-Pearson + SNR loss to the PPG (``train.losses``) and the spectral components
L_k (peak, background, morphology) between the student's and the RF teacher's waveforms, weighted by the
spectral policy network's gate g and weights alpha. :func:`meta_loss` is the bilevel objective that
trains the policy: L_sup on validation clips after one virtual step of the student on L; its gradient with
respect to the policy is taken exactly (second order) or, by default, by a central finite difference
(:func:`finite_difference_meta`); :func:`meta_objective` picks one by ``TrainConfig.meta_grad``.

Every method is one :class:`Method` in :data:`METHOD_IMPLS`, the only place method names are dispatched:
``supervised`` (no term), ``rpm-distill``, ``output-kd``, ``fitnets`` and ``dml`` (``train/kd.py``), and
two Table 1 comparisons that replace L_sup with their own published loss: ``physformer`` (PhysFormer's
loss, ``train/physformer.py``) and ``fusion`` (Vilesov et al.'s RGB-radar spectral fusion on the frozen
supervised video network and RF teacher, ``train/fusion.py``; it uses radar at test time).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.func import functional_call

from train import kd
from train.build import student_length
from train.config import COMPONENTS, LABEL_ONLY_METHODS, METHODS, TEACHERLESS_METHODS, TrainConfig
from train.distributed import autocast, to_fp32
from train.fusion import fusion_band, fusion_targets, spectrum_to_waveform, squared_neg_pearson
from train.losses import distill_components, relation_map, spectral_features, supervised_loss
from train.models import SpectralPolicy
from train.physformer import physformer_loss

if TYPE_CHECKING:
    from train.state import StepContext, StudentState


@dataclass
class Targets:
    """What a batch of student predictions is scored against."""

    y: Tensor  # (B, T) z-scored PPG labels
    labeled: Tensor  # (B,) bool: the clip's labels may be used
    wave: Tensor | None = None  # (B, T - 1) teacher (or dml peer) waveform
    hint: tuple[Tensor, Tensor] | None = None  # fitnets: (regressed student feature, teacher feature)
    epoch: int = 0  # the stage's current epoch, from 0 (physformer's curriculum weight)
    fused: Tensor | None = None  # fusion: the fused band spectrum (B, F) of this step


@dataclass
class Clips:
    """A batch of student inputs (B, 3, T, S, S) with its targets."""

    x: Tensor
    targets: Targets


def component_mask(cfg: TrainConfig) -> Tensor:
    """(3,) float mask over [peak, background, morphology] from the ablation switches."""
    return torch.tensor([float(cfg.peak), float(cfg.background), float(cfg.morphology)])


def distill_term(pred, teacher_wave, cfg: TrainConfig, policy, policy_grad: bool):
    """RPM-Distill's L_distill per sample (B,), plus (g (B,), alpha (B, 3), components (B, 3)).

    ``policy_grad``: (g, alpha) carry gradient to the policy. In the meta step the relation map is not
    detached (as in the code release); joint training (``bilevel=False``) detaches its input.
    Switched-off components get alpha 0 and the rest are renormalised; ``gate=False`` fixes g = 1 and
    ``weights=False`` fixes alpha to equal weights over the used components.
    """
    fs_s = spectral_features(pred, fs=cfg.fs)
    fs_t = spectral_features(teacher_wave, fs=cfg.fs)
    comps = distill_components(fs_s, fs_t)  # (B, 3): peak, background, morphology
    mask = component_mask(cfg).to(device=comps.device, dtype=comps.dtype)
    equal = (mask / mask.sum()).expand_as(comps)
    gate = torch.ones(comps.shape[0], device=comps.device, dtype=comps.dtype)
    alpha = equal
    if policy is not None:
        rel = relation_map(fs_s, fs_t)
        with torch.set_grad_enabled(policy_grad):
            g, a = policy(rel if cfg.bilevel else rel.detach())
        if cfg.gate:
            gate = g.to(comps.dtype)
        if cfg.weights:
            a = a.to(comps.dtype) * mask
            alpha = a / a.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return gate * (alpha * comps).sum(dim=1), gate, alpha, comps


class Method:
    """Plain supervision (no distillation term); the base of every method.

    A method adds its modules to a stage (:meth:`setup`), runs the stage's model on a batch
    (:meth:`predict`), completes the targets after that forward pass (:meth:`guide`, which may return its
    auxiliary module's own losses), scores the labelled clips (:meth:`sup_loss`, L_sup by default) and gives
    the per-sample distillation term (:meth:`term`, None: the method has none).
    """

    needs_teacher = False  # the run trains (or reuses) the RF teacher
    teacher_wave = False  # the frozen teacher runs on every batch's radar before the step
    uses_radar_at_test = False  # the trained model needs the radar window at test time (a fusion row)

    def setup(self, st: StudentState, cfg: TrainConfig, device) -> None:
        pass

    def predict(self, st: StudentState, batch: dict, x: Tensor, targets: Targets, ctx: StepContext) -> Tensor:
        """The stage model's waveform (B, >= T - 1) for video input ``x`` (B, 3, T, S, S)."""
        return st.student(x)

    def sup_loss(self, pred: Tensor, targets: Targets, cfg: TrainConfig) -> Tensor:
        """The supervised loss of the labelled clips (L_sup: 0.01 neg-Pearson + SNR), a scalar."""
        lab = targets.labeled
        return supervised_loss(pred[lab], targets.y[lab], fs=cfg.fs)

    def guide(
        self, st: StudentState, batch: dict, pred: Tensor, targets: Targets, ctx: StepContext
    ) -> dict[str, Tensor]:
        return {}

    def term(self, pred, targets: Targets, cfg: TrainConfig, policy=None, policy_grad: bool = False):
        """(per-sample L_kd (B,), stats) or None."""
        return None


class RpmDistill(Method):
    """The spectral term to the teacher's waveform, weighted by the spectral policy's (g, alpha)."""

    needs_teacher = teacher_wave = True

    def setup(self, st, cfg, device):
        if cfg.policy and (cfg.gate or cfg.weights):
            st.policy = SpectralPolicy().to(device)
            st.policy_opt = torch.optim.Adam(st.policy.parameters(), lr=cfg.policy_lr, weight_decay=0.0)
            st.meta = cfg.bilevel

    def term(self, pred, targets, cfg, policy=None, policy_grad=False):
        per, gate, alpha, comps = distill_term(pred, targets.wave, cfg, policy, policy_grad)
        stats = {name: comps[:, i].detach().mean() for i, name in enumerate(COMPONENTS)}
        stats["gate"] = gate.detach().mean()
        stats.update({f"alpha_{name}": alpha[:, i].detach().mean() for i, name in enumerate(COMPONENTS)})
        return per, stats


class OutputKD(Method):
    """Waveform matching to the teacher's output (``kd.waveform_kd``)."""

    needs_teacher = teacher_wave = True

    def term(self, pred, targets, cfg, policy=None, policy_grad=False):
        return kd.waveform_kd(pred, targets.wave), {}


class FitNets(Method):
    """A regressor maps the student's guided feature onto the teacher's hint feature (L2)."""

    needs_teacher = teacher_wave = True  # the teacher's forward pass fills the hint tap

    def setup(self, st, cfg, device):
        hint_layer, hint_channels = kd.teacher_hint_layer(st.teacher)
        guided_layer, guided_channels = st.student.guided_layer()
        st.teacher_tap, st.student_tap = kd.FeatureTap(hint_layer), kd.FeatureTap(guided_layer)
        st.aux = kd.HintRegressor(guided_channels, hint_channels).to(device)
        st.aux_opt = torch.optim.Adam(st.aux.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def guide(self, st, batch, pred, targets, ctx):
        targets.hint = (st.aux(to_fp32(st.student_tap.output)), to_fp32(st.teacher_tap.output))
        return {}

    def term(self, pred, targets, cfg, policy=None, policy_grad=False):
        return kd.hint_loss(*targets.hint), {}


class MutualLearning(Method):
    """dml: an RF peer (initialised from the teacher) and the student learn from each other's output."""

    needs_teacher = True

    def setup(self, st, cfg, device):
        st.aux = kd.make_peer(st.teacher).to(device)
        st.aux_opt = torch.optim.Adam(
            st.aux.parameters(), lr=cfg.teacher_lr, weight_decay=cfg.teacher_weight_decay
        )

    def guide(self, st, batch, pred, targets, ctx):
        with autocast(ctx.device, ctx.amp):
            peer = st.aux(batch["rf"].to(ctx.device, non_blocking=True))[:, : student_length(ctx.cfg)]
        peer = to_fp32(peer)
        targets.wave = peer.detach()
        # The peer learns from labels and from the student.
        peer_cfg = dataclasses.replace(ctx.cfg, method="output-kd")
        peer_loss, _ = objective(peer, Targets(targets.y, targets.labeled, wave=pred.detach()), peer_cfg)
        return {"peer_loss": peer_loss}

    def term(self, pred, targets, cfg, policy=None, policy_grad=False):
        return kd.waveform_kd(pred, targets.wave), {}


class PhysFormerLoss(Method):
    """PhysFormer trained with its published loss (``train.physformer.physformer_loss``) instead of L_sup:
    0.1 neg-Pearson + beta (HR-class cross-entropy + label-distribution KL), beta = 5^(epoch / epochs).
    The HR label of a clip is the report's HR of its PPG window. No teacher, no distillation term."""

    def sup_loss(self, pred, targets, cfg):
        lab = targets.labeled
        loss, _ = physformer_loss(pred[lab], targets.y[lab], cfg.fs, targets.epoch, cfg.epochs)
        return loss


class SpectralFusion(Method):
    """Vilesov et al. (2022) RGB-radar fusion (``train.fusion``), the release's recipe on our windows.

    The stage model is :class:`train.fusion.RGBRadarFusion`: the run's supervised video network (the
    ``baseline`` stage, trained first) and the RF teacher, both frozen, and the spectral fusion network,
    trained alone with Adam (lr 1e-3, no weight decay) on the squared negative Pearson correlation between
    the fused band spectrum and the PPG's band spectrum. The release's skin-tone adversary only acts after
    4 warm-up epochs and needs each window's skin type; it is not run here (``train.fusion`` has it).
    """

    needs_teacher = True
    uses_radar_at_test = True
    lr = 1e-3  # the release's fusion learning rate

    def setup(self, st, cfg, device):
        video = st.trained.get("baseline")
        if video is None or st.teacher is None:
            raise RuntimeError("method fusion needs the trained baseline video network and the RF teacher")
        st.student.video_net.load_state_dict(video.state_dict())
        st.student.radar_net.load_state_dict(st.teacher.state_dict())
        st.opt = torch.optim.Adam(st.student.fusion.parameters(), lr=self.lr, weight_decay=0.0)

    def predict(self, st, batch, x, targets, ctx):
        model = st.student
        video_wave, radar_wave = model.upstream(x, batch["rf"].to(ctx.device, non_blocking=True))
        with torch.autocast(ctx.device.type, enabled=False):  # the spectra and the FFTs run in fp32
            targets.fused = model.fuse(video_wave, radar_wave).float()
            return spectrum_to_waveform(targets.fused, video_wave, model.band)

    def sup_loss(self, pred, targets, cfg):
        lab = targets.labeled
        band = fusion_band(student_length(cfg), cfg.fs)
        return squared_neg_pearson(targets.fused[lab], fusion_targets(targets.y[lab], band))


METHOD_IMPLS: dict[str, Method] = {
    "supervised": Method(),
    "rpm-distill": RpmDistill(),
    "output-kd": OutputKD(),
    "fitnets": FitNets(),
    "dml": MutualLearning(),
    "physformer": PhysFormerLoss(),
    "fusion": SpectralFusion(),
}
assert set(METHOD_IMPLS) == set(METHODS)
assert {m for m, impl in METHOD_IMPLS.items() if not impl.needs_teacher} == set(TEACHERLESS_METHODS)


def method_of(cfg: TrainConfig) -> Method:
    """The method a stage runs: ``cfg.method``, or plain supervision in mode ``sup_only`` (a method that
    learns from labels alone, such as ``physformer``, keeps its own loss there)."""
    plain = cfg.mode == "sup_only" and cfg.method not in LABEL_ONLY_METHODS
    return METHOD_IMPLS["supervised" if plain else cfg.method]


def objective(pred, targets: Targets, cfg: TrainConfig, policy=None, policy_grad: bool = False):
    """Eq. 1 averaged over the batch -> (scalar loss, stats: name -> 0-d tensor).

    Labelled clips get L_sup + lambda * L_kd, unlabelled ones lambda * L_kd, where L_kd is the term of
    ``cfg``'s method (:data:`METHOD_IMPLS`); ``cfg.mode`` keeps only L_sup (sup_only) or only L_kd
    (distill_only). ``policy`` gives (g, alpha) to rpm-distill; ``policy_grad`` lets them carry gradient.
    """
    labeled = targets.labeled
    n = pred.shape[0]
    total = (pred * 0).sum()  # keeps a graph even when a batch has nothing to learn from
    stats: dict[str, Tensor] = {}
    method = method_of(cfg)
    if cfg.mode in ("distill", "sup_only") and bool(labeled.any()):
        sup = method.sup_loss(pred, targets, cfg)
        total = total + sup * (labeled.sum() / n)
        stats["sup"] = sup.detach()
    term = method.term(pred, targets, cfg, policy, policy_grad)  # None in mode sup_only
    if term is not None:
        per, term_stats = term
        stats.update(term_stats)
        total = total + cfg.lambda_distill * per.mean()
        stats["distill"] = per.detach().mean()
    return total, stats


def meta_loss(student: nn.Module, policy: nn.Module, train: Clips, val: Clips, cfg: TrainConfig, amp=False):
    """L_sup on a validation batch of the student after one virtual SGD step on L_tr (Eqs. 9-10).

    1. L_tr = Eq. 1 on the training batch with (g, alpha) from ``policy`` (gradient kept);
    2. theta' = theta - eta * dL_tr/dtheta with ``create_graph=True`` (eta = virtual_lr or lr);
    3. the student in eval mode at theta' on ``val.x``, through ``torch.func.functional_call``.
    Every forward gets its own clone of the buffers, so BatchNorm statistics of ``student`` are never
    changed. The result (a 0-d tensor) is differentiable with respect to the policy's parameters.
    """
    params = {k: p for k, p in student.named_parameters() if p.requires_grad}
    buffers = {k: b.detach().clone() for k, b in student.named_buffers()}
    length = student_length(cfg)
    with autocast(train.x.device, amp):
        pred = functional_call(student, (params, buffers), (train.x,))[:, :length]
    loss_tr, _ = objective(to_fp32(pred), train.targets, cfg, policy, policy_grad=True)
    grads = torch.autograd.grad(loss_tr, list(params.values()), create_graph=True, allow_unused=True)
    eta = cfg.virtual_lr if cfg.virtual_lr is not None else cfg.lr
    fast = {k: (p - eta * g if g is not None else p) for (k, p), g in zip(params.items(), grads, strict=True)}
    was_training = student.training
    student.eval()
    try:
        with autocast(val.x.device, amp):
            val_pred = functional_call(
                student, (fast, {k: b.detach().clone() for k, b in student.named_buffers()}), (val.x,)
            )[:, :length]
    finally:
        student.train(was_training)
    return supervised_loss(to_fp32(val_pred), val.targets.y, fs=cfg.fs)


# The central difference's step in parameter space, ||eps v|| (eps = FD_RADIUS / ||v||, the form DARTS,
# Liu et al. 2019, Sec. 2.3, uses with 0.01). Truncation error grows as FD_RADIUS^2 and fp32 rounding as
# 1 / FD_RADIUS. Measured on FactorizePhys (T 128, B 4, 72 px, fp32, at initialisation), relative error of
# the policy's meta-gradient against the exact one: 73 % at 1e-2, 1.6 % at 1e-3, 0.8 % at 3e-4 and 1e-4,
# 1.3 % at 3e-5, 2.5 % at 1e-5 (rounding); DARTS' 0.01 is far too coarse for this student. In float64 the
# error at 1e-4 is 4e-6 on a smooth toy student and 0.3 % on FactorizePhys (ReLU and |.| kinks):
# tests/test_meta.py.
FD_RADIUS = 1e-4


def meta_objective(
    student: nn.Module, policy: nn.Module, train: Clips, val: Clips, cfg: TrainConfig, amp=False
) -> tuple[Tensor, Tensor]:
    """(meta loss, surrogate): the meta loss L_val(theta') (0-d, detached) and a 0-d tensor whose gradient
    with respect to the policy's parameters is the meta-gradient, by ``cfg.meta_grad``:

    * ``exact``: :func:`meta_loss` itself (second order: backward through the virtual step);
    * ``finite-difference``: :func:`finite_difference_meta` (first-order passes only).
    """
    if cfg.meta_grad == "exact":
        loss = meta_loss(student, policy, train, val, cfg, amp)
        return loss.detach(), loss
    return finite_difference_meta(student, policy, train, val, cfg, amp)


def _rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class _FullPrecision:
    """fp32 convolutions and matmuls on CUDA (no TF32) inside the block; nothing changes on CPU."""

    def __enter__(self):
        self.saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


def _train_loss(student, params: dict, train: Clips, cfg, policy, amp: bool, grad: bool) -> Tensor:
    """L_tr (Eq. 1, 0-d) of the student at ``params`` on ``train``, (g, alpha) from ``policy`` with gradient.

    The student runs in its current mode on a clone of its buffers; ``grad`` False: its forward keeps no
    graph (the prediction, and the relation map read from it, are constants for the policy).
    """
    buffers = {k: b.detach().clone() for k, b in student.named_buffers()}
    with torch.set_grad_enabled(grad), autocast(train.x.device, amp):
        pred = functional_call(student, (params, buffers), (train.x,))[:, : student_length(cfg)]
    loss, _ = objective(to_fp32(pred), train.targets, cfg, policy, policy_grad=True)
    return loss


def finite_difference_meta(
    student: nn.Module, policy: nn.Module, train: Clips, val: Clips, cfg: TrainConfig, amp=False
) -> tuple[Tensor, Tensor]:
    """The bilevel meta-gradient of :func:`meta_loss` by a central finite difference (DARTS, Sec. 2.3).

    With theta' = theta - eta * dL_tr/dtheta and v = dL_val/dtheta' at theta' (held constant),
        d L_val(theta'(phi)) / d phi = -eta * d/dphi [v . dL_tr(theta, phi)/dtheta]
            ~ -eta * d/dphi [L_tr(theta + eps v, phi) - L_tr(theta - eps v, phi)] / (2 eps)
    with eps = :data:`FD_RADIUS` / ||v||. Returns (L_val(theta') detached, that surrogate): backward of the
    surrogate gives the policy the meta-gradient. Passes: L_tr forward + backward (no ``create_graph``),
    the student at theta' forward + backward on ``val.x`` (eval mode, as in :func:`meta_loss`), and two
    forwards of the student without graph at theta +- eps v, whose L_tr keep a graph into the policy only.

    ``student`` is never changed: parameters enter through ``functional_call`` dicts, every forward gets
    a clone of the buffers, and no parameter receives ``.grad``. The two perturbed forwards replay the
    random state of the first (the same dropout masks in student and policy, or the difference would be
    noise) and then the random state continues as after :func:`meta_loss`; they run in fp32 without TF32
    (the difference of two bf16 losses would be rounding noise). The policy's input (the relation map) is
    read from each perturbed student's output, so the difference also covers its path into g and alpha.
    """
    device = train.x.device
    params = {k: p for k, p in student.named_parameters() if p.requires_grad}
    start = _rng_state(device)
    loss_tr = _train_loss(student, params, train, cfg, policy, amp, grad=True)
    grads = torch.autograd.grad(loss_tr, list(params.values()), allow_unused=True)
    eta = cfg.virtual_lr if cfg.virtual_lr is not None else cfg.lr
    fast = {
        k: (p.detach() - eta * g if g is not None else p.detach()).requires_grad_()
        for (k, p), g in zip(params.items(), grads, strict=True)
    }
    was_training = student.training
    student.eval()
    try:
        buffers = {k: b.detach().clone() for k, b in student.named_buffers()}
        with autocast(val.x.device, amp):
            val_pred = functional_call(student, (fast, buffers), (val.x,))[:, : student_length(cfg)]
    finally:
        student.train(was_training)
    val_loss = supervised_loss(to_fp32(val_pred), val.targets.y, fs=cfg.fs)
    v = torch.autograd.grad(val_loss, list(fast.values()), allow_unused=True)
    v = {k: g.detach() for k, g in zip(fast, v, strict=True) if g is not None}
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in v.values()))
    eps = FD_RADIUS / max(norm, 1e-30)
    after = _rng_state(device)
    losses = []
    for sign in (1.0, -1.0):
        shifted = {k: (p.detach() + sign * eps * v[k] if k in v else p) for k, p in params.items()}
        _set_rng_state(device, start)
        with _FullPrecision():
            losses.append(_train_loss(student, shifted, train, cfg, policy, amp=False, grad=False))
    _set_rng_state(device, after)
    surrogate = -eta * (losses[0] - losses[1]) / (2 * eps)
    return val_loss.detach(), surrogate
