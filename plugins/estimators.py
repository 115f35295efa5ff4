"""Cheap estimators of how well layer n transfers: linear probe, kNN, LogME, CKA, H-score, TransRate,
LEEP, NCE.

Each scores the layer-n features of a trained source network on the target half's examples
(:class:`transferbench.LayerFeatures`), higher = more transferable; docs/estimators.md says
what each measures and how well it tracked retraining. A few lines of torch each, in
float64 where sums of squares are taken, deterministic on the CPU:

* ``linear``: multinomial logistic regression (L-BFGS, L2) on standardised features of the
  training examples, top-1 on the held-out ones: the "frozen AnB" without the upper layers.
* ``knn``: k-nearest-neighbour top-1 (cosine similarity, votes weighted by
  ``exp(similarity / temperature)``, Wu et al. 2018) of held-out examples among the
  training examples.
* ``logme``: the log marginal evidence of a Bayesian linear model from the features to each
  one-hot label column, per example, averaged over classes (You et al., ICML 2021).
* ``cka``: linear CKA (Kornblith et al., ICML 2019; debiased by default, Nguyen et al.,
  ICLR 2021) between the source network's and the target's own base network's layer-n
  features of the same held-out examples.
* ``hscore``: ``tr(cov(f)^+ cov(E[f | y]))``, how much of the features' variance the class
  means explain, in the features' own metric (Bao et al., ICIP 2019); ``shrinkage`` of the
  covariance towards its diagonal keeps it invertible when examples are few.
* ``transrate``: the coding rate of the features minus its mean over the classes,
  ``R(Z) - 1/K sum_c R(Z_c)`` with ``R(Z) = 1/2 logdet(I + Z^T Z / (n eps))`` on centred
  features (Huang et al., ICML 2022).

* ``leep``: the log of the expected empirical prediction (Nguyen et al., ICML 2020): the mean
  log-likelihood of the target labels under the source classifier's softmax composed with the
  empirical conditional ``P(y | z)`` of target label given source label.
* ``nce``: the negative conditional entropy ``-H(Y | Z)`` of the target labels given the
  source classifier's hard predictions (Tran et al., ICCV 2019).

LEEP and NCE read the source network's classifier outputs (``needs_source_outputs``), not the
layer-n features: for a given source network and target task they score the same at every n.

They run on the device the features are on (the job's CUDA device, else the CPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from transferbench import Estimator, LayerFeatures, hookimpl

_CHUNK = 1024  # held-out rows compared with the training rows at once (bounded memory)


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Centre and scale by the training rows' statistics; constant features stay 0."""
    mean = train.mean(0)
    std = train.std(0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return [(t - mean) / std for t in (train, *others)]


class LinearParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    l2: float = Field(1e-3, ge=0, description="L2 penalty on the weights, added to the mean cross-entropy")
    max_iter: int = Field(100, ge=1, description="L-BFGS iterations")


class LinearProbe(Estimator[LinearParams]):
    """Held-out top-1 of a logistic regression on frozen layer-n features (a linear AnB)."""

    description = "linear probe: logistic regression on layer-n features, held-out top-1"
    Params = LinearParams

    def score(self, features: LayerFeatures) -> float:
        p: LinearParams = self.params
        x, xe = _standardise(features.train.float(), features.eval.float())
        y, k = features.train_labels, features.num_classes
        weight = torch.zeros(x.shape[1], k, device=x.device, requires_grad=True)
        bias = torch.zeros(k, device=x.device, requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=p.max_iter, history_size=10,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, y) + 0.5 * p.l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        with torch.no_grad():
            pred = (xe @ weight + bias).argmax(1)
        return float((pred == features.eval_labels).float().mean())

    def cost_flops(self, n_train: int, n_eval: int, dim: int, num_classes: int) -> float:
        # forward and backward (3 matrix products of N x D x K) per function evaluation,
        # about 1.25 evaluations per L-BFGS iteration
        per_eval = 6.0 * n_train * dim * num_classes
        return 1.25 * self.params.max_iter * per_eval + 2.0 * n_eval * dim * num_classes


class KnnParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(20, ge=1, description="neighbours that vote")
    temperature: float = Field(0.07, gt=0, description="votes weigh exp(cosine similarity / temperature)")


class KNearest(Estimator[KnnParams]):
    """Held-out top-1 of a weighted k-nearest-neighbour vote among the training examples."""

    description = "k-nearest neighbours (cosine) on layer-n features, held-out top-1"
    Params = KnnParams

    def score(self, features: LayerFeatures) -> float:
        p: KnnParams = self.params
        train, evaluation = features.train.float(), features.eval.float()
        mean = train.mean(0)
        train = F.normalize(train - mean, dim=1)
        evaluation = F.normalize(evaluation - mean, dim=1)
        labels = features.train_labels
        k = min(p.k, len(labels))
        correct = 0
        for start in range(0, len(evaluation), _CHUNK):
            sims, idx = (evaluation[start:start + _CHUNK] @ train.T).topk(k, dim=1)
            votes = torch.zeros(len(sims), features.num_classes, dtype=torch.float64, device=sims.device)
            votes.scatter_add_(1, labels[idx], (sims.double() / p.temperature).exp())
            correct += int((votes.argmax(1) == features.eval_labels[start:start + _CHUNK]).sum())
        return correct / len(evaluation)

    def cost_flops(self, n_train: int, n_eval: int, dim: int, num_classes: int) -> float:
        return 2.0 * n_eval * n_train * dim


class LogMEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_iter: int = Field(50, ge=1, description="fixed-point iterations for the prior and noise precisions")


def _spectrum(x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues sigma_i of x^T x and the squared projections z_i^2 of every target column on
    the matching left singular vectors, from whichever of x^T x and x x^T is smaller."""
    n, d = x.shape
    if n > d:
        sigma, v = torch.linalg.eigh(x.T @ x)
        sigma = sigma.clamp_min(0.0)
        proj = (x @ v).T @ targets  # s_i z_i
        z2 = torch.where(sigma[:, None] > 1e-10 * sigma.max(), proj.pow(2) / sigma[:, None].clamp_min(1e-300), 0.0)
    else:
        sigma, u = torch.linalg.eigh(x @ x.T)
        sigma = sigma.clamp_min(0.0)
        z2 = (u.T @ targets).pow(2)
    return sigma, z2


def _evidence(sigma: torch.Tensor, z2: torch.Tensor, y2: float, n: int, d: int, max_iter: int) -> float:
    """The maximised log evidence per example of one target column (You et al. 2021, Alg. 1)."""
    alpha, beta = 1.0, 1.0
    rest = max(y2 - float(z2.sum()), 0.0)  # the part of y outside the features' span
    for _ in range(max_iter):
        t = alpha + beta * sigma
        gamma = float((beta * sigma / t).sum())
        m2 = float((beta**2 * sigma * z2 / t**2).sum())
        res2 = float(((alpha / t) ** 2 * z2).sum()) + rest
        # bounded: with more features than examples the fit can be exact (gamma -> n, res2 -> 0)
        new_alpha = min(max(gamma / max(m2, 1e-300), 1e-12), 1e12)
        new_beta = min(max((n - gamma) / max(res2, 1e-300), 1e-12), 1e12)
        done = abs(new_alpha / new_beta - alpha / beta) <= 1e-3 * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if done:
            break
    t = alpha + beta * sigma
    m2 = float((beta**2 * sigma * z2 / t**2).sum())
    res2 = float(((alpha / t) ** 2 * z2).sum()) + rest
    log_det = float(torch.log(t).sum()) + (d - len(sigma)) * math.log(alpha)  # zero eigenvalues
    evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2)
    return evidence / n


class LogME(Estimator[LogMEParams]):
    """LogME: evidence of a Bayesian linear model from layer-n features to the labels."""

    description = "LogME evidence of a linear model from layer-n features to the labels (You et al. 2021)"
    Params = LogMEParams

    def score(self, features: LayerFeatures) -> float:
        x = features.train.double()
        n, d = x.shape
        targets = F.one_hot(features.train_labels, features.num_classes).double()
        sigma, z2 = _spectrum(x, targets)
        sigma, z2 = sigma.cpu(), z2.cpu()  # the fixed-point loop is scalar work
        scores = [_evidence(sigma, z2[:, c], float(targets[:, c].sum()), n, d, self.params.max_iter)
                  for c in range(features.num_classes)]
        return sum(scores) / len(scores)

    def cost_flops(self, n_train: int, n_eval: int, dim: int, num_classes: int) -> float:
        small = min(n_train, dim)
        return 2.0 * n_train * dim * small + 10.0 * small**3 + 2.0 * n_train * small * num_classes


def linear_cka(x: torch.Tensor, y: torch.Tensor, *, debiased: bool = False) -> float:
    """Linear CKA of two representations of the same examples (rows).

    1 for representations that differ by an orthogonal transform and an isotropic scaling;
    near 0 for unrelated ones when the examples outnumber the features. With fewer examples
    than features the plain estimate is biased upwards (two independent Gaussian 50 x 300
    matrices score about 0.86); ``debiased`` uses the unbiased HSIC estimator of Song et al.
    (2012) instead, as Nguyen, Raghu and Kornblith (ICLR 2021) do.
    """
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    n = x.shape[0]
    gram = n * n <= x.shape[1] * y.shape[1]  # the n x n Gram matrices are the cheaper form
    gx, gy = (x @ x.T, y @ y.T) if gram else (None, None)

    def dot(a: torch.Tensor, b: torch.Tensor, ga: torch.Tensor | None, gb: torch.Tensor | None) -> float:
        value = float((ga * gb).sum()) if ga is not None and gb is not None else float((a.T @ b).pow(2).sum())
        if not debiased:
            return value
        rows_a, rows_b = a.pow(2).sum(1), b.pow(2).sum(1)
        return (value - n / (n - 2) * float(rows_a @ rows_b)
                + float(rows_a.sum()) * float(rows_b.sum()) / ((n - 1) * (n - 2)))

    xx, yy = dot(x, x, gx, gx), dot(y, y, gy, gy)
    if xx <= 0 or yy <= 0:
        return 0.0
    return dot(x, y, gx, gy) / math.sqrt(xx * yy)


class CKAParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    debiased: bool = Field(True, description="unbiased HSIC estimator (the plain one is biased upwards when "
                                             "features outnumber examples)")


class CKA(Estimator[CKAParams]):
    """Linear CKA between the source's and the target's own base network's layer-n features."""

    description = "linear CKA between the source's and the target base's layer-n features (Kornblith et al. 2019)"
    Params = CKAParams
    needs_reference = True

    def score(self, features: LayerFeatures) -> float:
        if features.reference is None:
            raise ValueError("cka needs the target base network's features (features.reference)")
        return linear_cka(features.eval, features.reference.eval, debiased=self.params.debiased)

    def cost_flops(self, n_train: int, n_eval: int, dim: int, num_classes: int) -> float:
        return 2.0 * n_eval * min(3 * dim * dim, 3 * n_eval * dim)


class HScoreParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shrinkage: float = Field(1e-3, ge=0, lt=1, description="weight of the covariance's diagonal mixed into it "
                             "(Ledoit-Wolf style), so that it can be inverted with few examples")


class HScore(Estimator[HScoreParams]):
    """H-score: the class means' share of the feature covariance, ``tr(cov(f)^-1 cov(E[f|y]))``."""

    description = "H-score: class-conditional mean covariance against feature covariance (training examples)"
    Params = HScoreParams

    def score(self, features: LayerFeatures) -> float:
        f = features.train.double()
        f = f - f.mean(0)
        n = len(f)
        cov = f.T @ f / n
        a = self.params.shrinkage
        cov = (1 - a) * cov + a * torch.diag(torch.diagonal(cov)).clamp_min(1e-12)
        means = torch.zeros(features.num_classes, f.shape[1], dtype=f.dtype, device=f.device)
        means.index_add_(0, features.train_labels, f)
        counts = torch.bincount(features.train_labels, minlength=features.num_classes).clamp_min(1)
        g = (means / counts[:, None].to(f.dtype))[features.train_labels]  # each row: its class mean
        cov_g = g.T @ g / n
        return float(torch.trace(torch.linalg.pinv(cov, hermitian=True) @ cov_g))

    def cost_flops(self, n_train: int, n_eval: int, dim: int, num_classes: int) -> float:
        return 4.0 * n_train * dim * dim + 10.0 * dim ** 3


class TransRateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eps: float = Field(1e-4, gt=0, description="distortion of the coding rate: R(Z) = 1/2 logdet(I + Z^T Z / (n eps))")


def _coding_rate(z: torch.Tensor, eps: float) -> torch.Tensor:
    n, d = z.shape
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    return 0.5 * torch.linalg.slogdet(eye + z.T @ z / (n * eps))[1]


class TransRate(Estimator[TransRateParams]):
    """TransRate: the features' coding rate minus its mean within the classes (training examples)."""

    description = "TransRate: coding rate of the features minus its mean over classes (training examples)"
    Params = TransRateParams

    def score(self, features: LayerFeatures) -> float:
        z = features.train.double()
        z = z - z.mean(0)
        eps = self.params.eps
        labels = features.train_labels
        within = [_coding_rate(z[labels == c], eps) for c in range(features.num_classes) if bool((labels == c).any())]
        return float(_coding_rate(z, eps) - torch.stack(within).mean())

    def cost_flops(self, n_train: int, n_eval: int, dim: int, num_classes: int) -> float:
        return 4.0 * n_train * dim * dim + (num_classes + 1) * dim ** 3


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _source_logits(features: LayerFeatures, name: str) -> torch.Tensor:
    if features.source_logits is None:
        raise ValueError(f"{name} needs the source network's classifier outputs (features.source_logits)")
    return features.source_logits


class LEEP(Estimator[NoParams]):
    """LEEP: mean log-likelihood of the target labels under the source's softmax and the
    empirical ``P(y | z)`` (training examples; the same score at every n)."""

    description = "LEEP: log expected empirical prediction of the source classifier (Nguyen et al. 2020)"
    Params = NoParams
    needs_source_outputs = True

    def score(self, features: LayerFeatures) -> float:
        theta = torch.softmax(_source_logits(features, "leep").double(), dim=1)  # (n, Z): p(z | x_i)
        labels, n = features.train_labels, len(features.train_labels)
        joint = torch.zeros(features.num_classes, theta.shape[1], dtype=theta.dtype, device=theta.device)
        joint.index_add_(0, labels, theta / n)  # P(y, z) = 1/n sum_{i: y_i = y} p(z | x_i)
        conditional = joint / joint.sum(0, keepdim=True).clamp_min(1e-300)  # P(y | z)
        expected = (theta * conditional[labels]).sum(1)  # sum_z P(y_i | z) p(z | x_i)
        return float(expected.clamp_min(1e-300).log().mean())

    def cost_flops(self, n_train: int, n_eval: int, dim: int, num_classes: int) -> float | None:
        return None  # scales with the source's classes, which the cost model does not know


class NCE(Estimator[NoParams]):
    """NCE: ``-H(Y | Z)`` of the target labels given the source classifier's hard predictions
    (training examples; the same score at every n)."""

    description = "NCE: negative conditional entropy of target labels given source predictions (Tran et al. 2019)"
    Params = NoParams
    needs_source_outputs = True

    def score(self, features: LayerFeatures) -> float:
        logits = _source_logits(features, "nce")
        z = logits.argmax(1)  # the source's hard predictions
        labels, n = features.train_labels, len(features.train_labels)
        joint = torch.zeros(features.num_classes, logits.shape[1], dtype=torch.float64, device=z.device)
        joint.index_put_((labels, z), torch.ones(n, dtype=torch.float64, device=z.device), accumulate=True)
        joint /= n  # empirical P(y, z)
        marginal = joint.sum(0, keepdim=True)  # P(z)
        seen = joint > 0  # 0 log 0 = 0
        ratio = torch.where(seen, joint / marginal.clamp_min(1e-300), torch.ones_like(joint))
        return float((joint * ratio.log()).sum())

    def cost_flops(self, n_train: int, n_eval: int, dim: int, num_classes: int) -> float | None:
        return None


@hookimpl
def register_estimators(register) -> None:
    register("linear", LinearProbe)
    register("knn", KNearest)
    register("logme", LogME)
    register("cka", CKA)
    register("hscore", HScore)
    register("transrate", TransRate)
    register("leep", LEEP)
    register("nce", NCE)
