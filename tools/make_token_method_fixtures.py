"""Token-level preference-method goldens (fixtures/README.md section 15, issue 32).

Writes fixtures/token_methods.json (path: argv[1]): ConfPO, SePO, TIS-DPO, critical-token DPO
("critical_token", cDPO in its paper) and TGDPO, computed in float64 with PyTorch from the
equations of tools/token-methods-spec.md (a transcription of the spec, not a run of the authors'
repositories). Every per-token input is float32-representable (the Rust side computes in f32
from the same values) and holds finite garbage under mask 0; gradients w.r.t. the policy
log-probs come from torch.autograd on float64 leaves.

Deterministic (per-case torch.Generator seeds, no network, single-threaded). Before writing, it
checks that every discrete decision (ConfPO's strict threshold, SePO's top-K, TIS-DPO's
rounding, ranks and binary cut) is the same in float32 arithmetic or is an exact tie, and that
replacing the garbage under mask 0 changes nothing. Run through tools/make_token_method_fixtures.sh.
"""

import json
import math
import platform
import sys
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

torch.set_num_threads(1)
torch.manual_seed(0)
F = torch.nn.functional
DT = torch.float64
LN2 = math.log(2.0)

GARBAGE = [1.0e4, -37.5, 250.0, -1.0e4, 7.5, -3.0e4, 0.0, 1.0e3]
ALT_GARBAGE = [-5.0e3, 99.5, -0.125, 3.0e4, -7.0, 2.0e3, 1.0, -250.0]  # invariance check only

TISDPO_DEFAULTS = {
    "tisdpo_top_percent": 100.0,
    "tisdpo_upper": 1.0,
    "tisdpo_lower": -1.0,
    "tisdpo_min_val": -1.5,
    "tisdpo_max_val": 1.5,
    "tisdpo_min_scale": 0.7,
    "tisdpo_max_scale": 1.3,
    "tisdpo_round_decimals": 2,
}

# Log-probs used where every token of a sequence is equal (one-token completions, all-equal
# rows): |x| in [4, 8) and exp(x) with mantissa in (1, 4/3), so that the mean of up to 4 equal
# probabilities is exact in any summation order and log(exp(x)) == x in f32 and f64 (checked).
TIE_LOGPS = [-5.40625, -4.6875, -6.125, -7.5]
# f32(log 0.25), f32(log 0.5), f32(log 0.75): a tie at the mean in exact arithmetic (0.5), exact
# in f32 only (see confpo_side_f32_checks)
NEAR_TIE_LOGPS = {float(torch.tensor(math.log(q), dtype=torch.float32)) for q in (0.25, 0.5, 0.75)}


# --------------------------------------------------------------------------------------------
# helpers


def f32(x):
    return x.to(torch.float32).to(DT)


def grid(x):
    """Round to a multiple of 1/1024 (exact in f32 for |x| < 2^13: differences stay exact)."""
    return torch.round(x * 1024.0) / 1024.0


def make_masks(rows, T):
    """rows: (chosen_offset, chosen_len, rejected_offset, rejected_len) per pair."""
    B = len(rows)
    mc = torch.zeros(B, T, dtype=torch.bool)
    mr = torch.zeros(B, T, dtype=torch.bool)
    for b, (oc, nc, orr, nr) in enumerate(rows):
        assert nc >= 1 and nr >= 1 and oc + nc <= T and orr + nr <= T
        mc[b, oc : oc + nc] = True
        mr[b, orr : orr + nr] = True
    return mc, mr


def positions(m, b):
    return [t for t in range(m.shape[1]) if bool(m[b, t])]


def with_garbage(x, m, salt, table):
    """x [B,T] or [B,T,V]: replace the positions where m is False by finite garbage."""
    x = x.clone()
    B, T = m.shape
    for b in range(B):
        for t in range(T):
            if not bool(m[b, t]):
                if x.dim() == 2:
                    x[b, t] = table[(b * T + t + salt) % len(table)]
                else:
                    for v in range(x.shape[2]):
                        x[b, t, v] = table[(b * T + t + v + salt) % len(table)]
    return x


def rand_logps(gen, B, T):
    """Realistic log-probs in [-8, -0.01]: log-uniform magnitude."""
    u = torch.rand(B, T, generator=gen, dtype=DT)
    return f32(torch.clamp(-torch.exp(math.log(0.01) + u * math.log(800.0)), -8.0, -0.0101))


def near(gen, x, sd):
    """x plus N(0, sd^2) noise, reflected below 0 and kept in [-8, -0.0101]."""
    y = x + sd * torch.randn(x.shape, generator=gen, dtype=DT)
    return f32(-torch.clamp(y.abs(), 0.0101, 8.0))


def num(x):
    x = float(x.detach()) if isinstance(x, torch.Tensor) else float(x)
    assert math.isfinite(x)
    return x + 0.0  # no -0.0 in the file


def mat(x, m=None, null_masked=False):
    """[B][T] list; with m: null (null_masked) or 0 where m is False."""
    out = []
    for b in range(x.shape[0]):
        row = []
        for t in range(x.shape[1]):
            if m is not None and not bool(m[b, t]):
                row.append(None if null_masked else 0.0)
            else:
                row.append(num(x[b, t]))
        out.append(row)
    return out


def cube(x):
    return [[[num(v) for v in x[b, t]] for t in range(x.shape[1])] for b in range(x.shape[0])]


def vec(x):
    return [num(v) for v in x]


def imask(m):
    return [[int(bool(v)) for v in row] for row in m]


def leaf(x):
    return x.clone().detach().requires_grad_(True)


def grads(loss, lpc, lpr, mc, mr):
    gc, gr = torch.autograd.grad(loss, [lpc, lpr], allow_unused=True)
    gc = torch.zeros_like(lpc) if gc is None else gc
    gr = torch.zeros_like(lpr) if gr is None else gr
    assert torch.isfinite(gc).all() and torch.isfinite(gr).all()
    assert (gc[~mc] == 0).all() and (gr[~mr] == 0).all()
    return gc, gr


# --------------------------------------------------------------------------------------------
# ConfPO (spec section 1): hee-suk-yoon/ConfPO 044b366f, CPOTrainer.cpo_loss_confpo, loss simpo


def confpo_side_f32_checks(lp, m):
    """The kept set must not depend on the arithmetic: exact ties only in all-equal rows."""
    for b in range(lp.shape[0]):
        pos = positions(m, b)
        vals = [float(lp[b, t]) for t in pos]
        if all(v == vals[0] for v in vals):
            assert len(vals) <= 4 and vals[0] in TIE_LOGPS, (vals, "use TIE_LOGPS for equal rows")
            v = vals[0]
            assert 1.0 < 2.0 * math.frexp(math.exp(v))[0] < 4.0 / 3.0 and math.log(math.exp(v)) == v
            x32 = torch.tensor([v], dtype=torch.float32)
            assert torch.equal(x32.exp().log(), x32) and torch.equal(x32.double().exp().log(), x32.double())
            for dt in (torch.float32, torch.float64):
                x = torch.tensor(vals, dtype=dt)
                p = x.exp()
                tau = (p.sum() / len(vals)).log()
                assert not (x < tau).any() and not (p < p.sum() / len(vals)).any(), (vals, dt)
                pairwise = p if len(vals) != 4 else torch.stack([(p[0] + p[1]) + (p[2] + p[3])])
                assert not (p < pairwise.sum() / len(vals)).any()
            mp = 0.0
            for v in vals:
                mp += math.exp(v)
            assert not any(v < math.log(mp / len(vals)) for v in vals)
        elif set(vals) <= NEAR_TIE_LOGPS:
            # log-probs of 0.25, 0.5, 0.75 (rounded to f32): the 0.5 tokens sit 6e-9 above the
            # threshold in f64 and exactly on it in f32 (torch's CPU kernels): not kept either way
            x = torch.tensor(vals, dtype=DT)
            tau = (x.exp().sum() / len(vals)).log()
            assert (x - tau).abs().min() > 1e-12
            x32 = torch.tensor(vals, dtype=torch.float32)
            tau32 = (x32.exp().sum() / len(vals)).log()
            assert torch.equal(x32 < tau32, x < tau) and (x32 == tau32).any()
        else:
            x = torch.tensor(vals, dtype=DT)
            tau = (x.exp().sum() / len(vals)).log()
            assert (x - tau).abs().min() > 1e-4, ("ConfPO near-tie", vals)
            x32 = torch.tensor(vals, dtype=torch.float32)
            tau32 = (x32.exp().sum() / len(vals)).log()
            assert torch.equal(x32 < tau32, x < tau)


def confpo(inp, mc, mr, p):
    beta, gamma, eps = p["beta"], p["simpo_gamma"], p["label_smoothing"]
    lpc, lpr = leaf(inp["policy_chosen_logps"]), leaf(inp["policy_rejected_logps"])

    def side(lp, m):
        x = torch.where(m, lp, torch.zeros_like(lp))
        xd = x.detach()
        n = m.sum(-1).to(DT)
        mean_p = torch.where(m, xd.exp(), torch.zeros_like(xd)).sum(-1) / n
        tau = mean_p.log()
        keep = m & (xd < tau[:, None])
        k = keep.sum(-1)
        norm = k.clamp(min=1).to(DT)
        a = torch.where(keep, x, torch.zeros_like(x)).sum(-1) / norm
        return keep, k, norm, a

    keep_c, kc, norm_c, ac = side(lpc, mc)
    keep_r, kr, norm_r, ar = side(lpr, mr)
    z = ac - ar - gamma / beta
    losses = -F.logsigmoid(beta * z) * (1 - eps) - F.logsigmoid(-beta * z) * eps
    valid = (kc > 0) & (kr > 0)
    losses = torch.where(valid, losses, torch.zeros_like(losses))
    loss = losses.mean()
    gc, gr = grads(loss, lpc, lpr, mc, mr)
    return {
        "chosen_scores": mat(lpc.detach(), mc, True),
        "rejected_scores": mat(lpr.detach(), mr, True),
        "chosen_weights": mat(keep_c.to(DT), mc),
        "rejected_weights": mat(keep_r.to(DT), mr),
        "chosen_normaliser": vec(norm_c),
        "rejected_normaliser": vec(norm_r),
        "pair_valid": [int(v) for v in valid],
        "pair_losses": vec(losses.detach()),
        "chosen_rewards": vec(beta * ac.detach()),
        "rejected_rewards": vec(beta * ar.detach()),
        "loss": num(loss),
        "grad_policy_chosen_logps": mat(gc, mc),
        "grad_policy_rejected_logps": mat(gr, mr),
    }


# --------------------------------------------------------------------------------------------
# SePO (spec section 2): SteveKGYang/SePO 82fab6cd, token_score.get_topK + SelectiveRRHFLoss


def sepo_select(r, m, b, ratio, largest):
    pos = positions(m, b)
    cand = pos[1:]  # the first completion token is never a candidate
    n_cand = len(cand)
    k = int(ratio * n_cand)  # the code's int(float(k) * N_token), float64 product truncated
    assert k >= 1, "SePO goldens must not contain K = 0"
    vals = [float(r[b, t]) for t in cand]
    order = sorted(range(n_cand), key=lambda i: (-vals[i] if largest else vals[i], i))
    # The code: repeated argmax/argmin (first index among ties), picks overwritten by -+1e5.
    work = list(vals)
    picks = []
    for _ in range(k):
        best = 0
        for i in range(1, n_cand):
            if (work[i] > work[best]) if largest else (work[i] < work[best]):
                best = i
        picks.append(best)
        work[best] = -100000.0 if largest else 100000.0
    assert sorted(picks) == sorted(order[:k])
    # f32 scores (lo - lor rounded to f32) must rank the same: the inputs sit on a 1/1024 grid
    assert all(float(torch.tensor(v, dtype=torch.float32)) == v for v in vals)
    return [cand[i] for i in order[:k]], k


def sepo(inp, mc, mr, p):
    ratio_c, ratio_r, scale = p["sepo_ratio"], p["sepo_rejected_ratio"], p["sepo_scale"]
    lpc, lpr = leaf(inp["policy_chosen_logps"]), leaf(inp["policy_rejected_logps"])
    rc = torch.where(mc, inp["oracle_chosen_logps"] - inp["oracle_ref_chosen_logps"], torch.zeros_like(lpc))
    rr = torch.where(mr, inp["oracle_rejected_logps"] - inp["oracle_ref_rejected_logps"], torch.zeros_like(lpr))
    B = lpc.shape[0]
    sel_c = torch.zeros_like(mc)
    sel_r = torch.zeros_like(mr)
    kc, kr = [], []
    for b in range(B):
        picks, k = sepo_select(rc, mc, b, ratio_c, True)
        sel_c[b, picks] = True
        kc.append(k)
        picks, k = sepo_select(rr, mr, b, ratio_r, False)
        sel_r[b, picks] = True
        kr.append(k)
    kc_t, kr_t = torch.tensor(kc, dtype=DT), torch.tensor(kr, dtype=DT)
    assert torch.equal(sel_c.sum(-1).to(DT), kc_t) and torch.equal(sel_r.sum(-1).to(DT), kr_t)
    ac = torch.where(sel_c, lpc, torch.zeros_like(lpc)).sum(-1) / kc_t
    ar = torch.where(sel_r, lpr, torch.zeros_like(lpr)).sum(-1) / kr_t
    losses = -F.logsigmoid(scale * (ac - ar))
    loss = losses.mean()
    gc, gr = grads(loss, lpc, lpr, mc, mr)
    return {
        "chosen_scores": mat(rc, mc, True),
        "rejected_scores": mat(rr, mr, True),
        "chosen_weights": mat(sel_c.to(DT), mc),
        "rejected_weights": mat(sel_r.to(DT), mr),
        "chosen_normaliser": vec(kc_t),
        "rejected_normaliser": vec(kr_t),
        "pair_valid": None,
        "pair_losses": vec(losses.detach()),
        "chosen_rewards": vec(ac.detach()),
        "rejected_rewards": vec(ar.detach()),
        "loss": num(loss),
        "grad_policy_chosen_logps": mat(gc, mc),
        "grad_policy_rejected_logps": mat(gr, mr),
    }


# --------------------------------------------------------------------------------------------
# TIS-DPO (spec section 3): exlaw/TIS-DPO cbad7c1a, preference_datasets.* transforms, tisdpo_loss.
# The transforms below follow the authors' functions line by line.


def binary_weight_transform(nums, top_percent):
    sorted_nums = sorted(nums, reverse=True)
    threshold_index = int(len(nums) * top_percent / 100)
    num_to_value = {num: 1 if i < threshold_index else 0 for i, num in enumerate(sorted_nums)}
    return [float(num_to_value[num]) for num in nums]


def threshold_weight_transform(nums, upper_threshold, lower_threshold):
    out = []
    for num in nums:
        if num > upper_threshold:
            out.append(upper_threshold)
        elif num < lower_threshold:
            out.append(lower_threshold)
        else:
            out.append(num)
    return out


def threshold_and_scale_transform(nums, min_val, max_val, min_scale, max_scale):
    out = []
    for num in nums:
        num = max(min_val, min(max_val, num))
        out.append(min_scale + (num - min_val) * (max_scale - min_scale) / (max_val - min_val))
    return out


def rank_based_transform(nums, min_scale, max_scale):
    sorted_indices = sorted(range(len(nums)), key=lambda k: nums[k])
    result = []
    for i, _ in enumerate(sorted_indices):
        if len(nums) == 1:
            result.append(1.0)
        else:
            result.append(min_scale + (i / (len(nums) - 1)) * (max_scale - min_scale))
    return [result[sorted_indices.index(i)] for i in range(len(nums))]


def tisdpo_transform(u, p):
    method = p["tisdpo_transform"]
    if method == "origin":
        return list(u)
    if method == "binary":
        return binary_weight_transform(u, p["tisdpo_top_percent"])
    if method == "threshold":
        return threshold_weight_transform(u, p["tisdpo_upper"], p["tisdpo_lower"])
    if method == "threshold_and_scale":
        return threshold_and_scale_transform(
            u, p["tisdpo_min_val"], p["tisdpo_max_val"], p["tisdpo_min_scale"], p["tisdpo_max_scale"]
        )
    if method == "rank_based":
        return rank_based_transform(u, p["tisdpo_min_scale"], p["tisdpo_max_scale"])
    raise ValueError(method)


def tisdpo_raw(neg, pos, m, b, decimals):
    """The dataset column: round(lm- - lm+, 2) per completion token without EOS."""
    out = []
    for t in positions(m, b)[:-1]:
        d = float(neg[b, t] - pos[b, t])
        d32 = float(torch.tensor(float(neg[b, t]), dtype=torch.float32) - torch.tensor(float(pos[b, t]), dtype=torch.float32))
        assert d == d32, "the live difference must be exact in f32 (1/1024 grid)"
        out.append(round(d, decimals) + 0.0)
    return out


def tisdpo(inp, mc, mr, p):
    beta, dec = p["beta"], p["tisdpo_round_decimals"]
    lpc, lpr = leaf(inp["policy_chosen_logps"]), leaf(inp["policy_rejected_logps"])
    B, T = mc.shape
    wc = torch.zeros(B, T, dtype=DT)
    wr = torch.zeros(B, T, dtype=DT)
    uc = torch.zeros(B, T, dtype=DT)
    ur = torch.zeros(B, T, dtype=DT)
    sc_mask = mc.clone()
    sr_mask = mr.clone()
    col_c, col_r = [], []
    for b in range(B):
        for side, m, w, u, smask, col, neg, pos in (
            ("c", mc, wc, uc, sc_mask, col_c, inp["neg_chosen_logps"], inp["pos_chosen_logps"]),
            ("r", mr, wr, ur, sr_mask, col_r, inp["neg_rejected_logps"], inp["pos_rejected_logps"]),
        ):
            raw = tisdpo_raw(neg, pos, m, b, dec)
            col.append(raw)
            vals = [(-x if side == "c" else x) + 0.0 for x in raw]
            wts = tisdpo_transform(vals, p)
            pl = positions(m, b)
            for i, t in enumerate(pl[:-1]):
                w[b, t] = wts[i]
                u[b, t] = vals[i]
            smask[b, pl[-1]] = False  # EOS: no score, weight 0
    rho_c = torch.where(mc, lpc - inp["ref_chosen_logps"], torch.zeros_like(lpc))
    rho_r = torch.where(mr, lpr - inp["ref_rejected_logps"], torch.zeros_like(lpr))
    s_c = (wc * rho_c).sum(-1)
    s_r = (wr * rho_r).sum(-1)
    losses = -F.logsigmoid(beta * (s_c - s_r))
    loss = losses.mean()
    gc, gr = grads(loss, lpc, lpr, mc, mr)
    assert col_c == inp["chosen_weight"] and col_r == inp["rejected_weight"]  # live == precomputed
    return {
        "chosen_scores": mat(uc, sc_mask, True),
        "rejected_scores": mat(ur, sr_mask, True),
        "chosen_weights": mat(wc, mc),
        "rejected_weights": mat(wr, mr),
        "chosen_normaliser": None,
        "rejected_normaliser": None,
        "pair_valid": None,
        "pair_losses": vec(losses.detach()),
        "chosen_rewards": vec(beta * s_c.detach()),
        "rejected_rewards": vec(beta * s_r.detach()),
        "loss": num(loss),
        "grad_policy_chosen_logps": mat(gc, mc),
        "grad_policy_rejected_logps": mat(gr, mr),
    }


# --------------------------------------------------------------------------------------------
# CT-DPO (spec section 4): chenzhiling9954/Critical-Tokens-Matter 228991e6, CDPOTrainer.dpo_loss


def ce_prob(pos_logits, neg_logits, labels, gamma):
    z = (1.0 + gamma) * pos_logits - gamma * neg_logits
    return torch.gather(torch.log_softmax(z, -1), 2, labels.unsqueeze(2)).squeeze(2).exp()


def critical_token(inp, mc, mr, p, layout):
    beta, only_neg, reduction = p["beta"], p["ct_only_neg"], p["ct_dpo_reduction"]
    lpc, lpr = leaf(inp["policy_chosen_logps"]), leaf(inp["policy_rejected_logps"])
    B, T = mc.shape
    pce_c, pce_r = inp["chosen_ce_prob"], inp["rejected_ce_prob"]
    wc = torch.zeros(B, T, dtype=DT)
    wr = torch.zeros(B, T, dtype=DT)
    for b in range(B):
        pl = positions(mc, b)
        for t in pl[:-1]:
            wc[b, t] = 1.0 if only_neg else float(pce_c[b, t])
        wc[b, pl[-1]] = 1.0
        pl = positions(mr, b)
        for t in pl[:-1]:
            wr[b, t] = 1.0 - float(pce_r[b, t])
        wr[b, pl[-1]] = 1.0
    rho_c = torch.where(mc, lpc - inp["ref_chosen_logps"], torch.zeros_like(lpc))
    rho_r = torch.where(mr, lpr - inp["ref_rejected_logps"], torch.zeros_like(lpr))
    if reduction == "sequence":
        assert p["ct_position_denominator"] is None
        g = (wc * rho_c).sum(-1) - (wr * rho_r).sum(-1)
        losses = -F.logsigmoid(beta * g)
        loss = losses.mean()
    else:
        # The authors' padded layout: row b = P_b prompt tokens + completion (EOS included), right
        # padded to L = max over the batch; after the shift, completion token i of either side
        # sits at column P_b - 1 + i of a [B, L - 1] grid.
        prompts, L = layout["prompt_lengths"], layout["padded_length"]
        Tp = L - 1
        assert p["ct_position_denominator"] == B * Tp
        bi, ji, vals = [], [], []
        for b in range(B):
            pcs, prs = positions(mc, b), positions(mr, b)
            assert prompts[b] >= 1 and prompts[b] + max(len(pcs), len(prs)) <= L
            for i in range(max(len(pcs), len(prs))):
                g = torch.zeros((), dtype=DT)
                if i < len(pcs):
                    g = g + wc[b, pcs[i]] * rho_c[b, pcs[i]]
                if i < len(prs):
                    g = g - wr[b, prs[i]] * rho_r[b, prs[i]]
                bi.append(b)
                ji.append(prompts[b] - 1 + i)
                vals.append(g)
        grid_g = torch.zeros(B, Tp, dtype=DT).index_put((torch.tensor(bi), torch.tensor(ji)), torch.stack(vals))
        per_pos = -F.logsigmoid(beta * grid_g)
        losses = per_pos.sum(-1)
        loss = per_pos.mean()
        assert abs(float(losses.detach().sum()) / (B * Tp) - float(loss.detach())) < 1e-15
    gc, gr = grads(loss, lpc, lpr, mc, mr)
    return {
        "chosen_scores": mat(pce_c, mc, True),
        "rejected_scores": mat(pce_r, mr, True),
        "chosen_weights": mat(wc, mc),
        "rejected_weights": mat(wr, mr),
        "chosen_normaliser": None,
        "rejected_normaliser": None,
        "pair_valid": None,
        "pair_losses": vec(losses.detach()),
        "chosen_rewards": vec(beta * rho_c.detach().sum(-1)),
        "rejected_rewards": vec(beta * rho_r.detach().sum(-1)),
        "loss": num(loss),
        "grad_policy_chosen_logps": mat(gc, mc),
        "grad_policy_rejected_logps": mat(gr, mr),
    }


# --------------------------------------------------------------------------------------------
# TGDPO (spec section 5): dvlab-research/TGDPO dd889823, CustomDPOTrainer.dpo_loss (sigmoid)


def tgdpo(inp, mc, mr, p):
    beta, alpha = p["beta"], p["tgdpo_alpha"]
    lpc, lpr = leaf(inp["policy_chosen_logps"]), leaf(inp["policy_rejected_logps"])
    z = torch.zeros_like(lpc)
    rh_c = torch.where(mc, inp["reward_chosen_logps"] - inp["ref_chosen_logps"], z)
    rh_r = torch.where(mr, inp["reward_rejected_logps"] - inp["ref_rejected_logps"], z)
    wc = torch.where(mc, 1.0 + alpha * beta * rh_c, z)
    wr = torch.where(mr, 1.0 - alpha * beta * rh_r, z)
    rho_c = torch.where(mc, lpc - inp["ref_chosen_logps"], z)
    rho_r = torch.where(mr, lpr - inp["ref_rejected_logps"], z)
    losses = -F.logsigmoid(beta * ((wc * rho_c).sum(-1) - (wr * rho_r).sum(-1)))
    loss = losses.mean()
    gc, gr = grads(loss, lpc, lpr, mc, mr)
    return {
        "chosen_scores": mat(rh_c, mc, True),
        "rejected_scores": mat(rh_r, mr, True),
        "chosen_weights": mat(wc, mc),
        "rejected_weights": mat(wr, mr),
        "chosen_normaliser": None,
        "rejected_normaliser": None,
        "pair_valid": None,
        "pair_losses": vec(losses.detach()),
        "chosen_rewards": vec(beta * rho_c.detach().sum(-1)),
        "rejected_rewards": vec(beta * rho_r.detach().sum(-1)),
        "loss": num(loss),
        "grad_policy_chosen_logps": mat(gc, mc),
        "grad_policy_rejected_logps": mat(gr, mr),
    }


METHODS = {"confpo": confpo, "sepo": sepo, "tisdpo": tisdpo, "tgdpo": tgdpo}


# --------------------------------------------------------------------------------------------
# case builders: each returns (inputs as float64 tensors, masks); garbage is added afterwards


def policy_ref(gen, B, T, with_ref):
    inp = {}
    inp["policy_chosen_logps"] = rand_logps(gen, B, T)
    inp["policy_rejected_logps"] = rand_logps(gen, B, T)
    if with_ref:
        inp["ref_chosen_logps"] = near(gen, inp["policy_chosen_logps"], 0.4)
        inp["ref_rejected_logps"] = near(gen, inp["policy_rejected_logps"], 0.4)
    return inp


def set_row(x, m, b, values):
    pl = positions(m, b)
    assert len(pl) == len(values)
    for t, v in zip(pl, values):
        x[b, t] = v


def build_confpo(seed, rows, T, equal_rows=(), value_rows=()):
    """equal_rows: (b, side, value) rows whose tokens are all set to one TIE_LOGPS value;
    value_rows: (b, side, [values]) rows set explicitly."""
    gen = torch.Generator().manual_seed(seed)
    mc, mr = make_masks(rows, T)
    B = len(rows)
    inp = policy_ref(gen, B, T, False)
    for b, side, vals in value_rows:
        m = mc if side == "c" else mr
        key = "policy_chosen_logps" if side == "c" else "policy_rejected_logps"
        set_row(inp[key], m, b, [float(torch.tensor(v, dtype=torch.float32)) for v in vals])
    for b, side, v in equal_rows:
        m = mc if side == "c" else mr
        key = "policy_chosen_logps" if side == "c" else "policy_rejected_logps"
        set_row(inp[key], m, b, [v] * int(m[b].sum()))
    # one-token completions are all-equal rows too: use the checked values
    for b in range(B):
        for m, key in ((mc, "policy_chosen_logps"), (mr, "policy_rejected_logps")):
            if int(m[b].sum()) == 1:
                set_row(inp[key], m, b, [TIE_LOGPS[(b + seed) % len(TIE_LOGPS)]])
    confpo_side_f32_checks(inp["policy_chosen_logps"], mc)
    confpo_side_f32_checks(inp["policy_rejected_logps"], mr)
    return inp, mc, mr


def build_sepo(seed, rows, T, r_rows=()):
    """r_rows: (b, side, [r per completion token]) to force exact scores (ties)."""
    gen = torch.Generator().manual_seed(seed)
    mc, mr = make_masks(rows, T)
    B = len(rows)
    inp = policy_ref(gen, B, T, False)
    for side in ("chosen", "rejected"):
        lor = grid(-2.0 - 4.0 * torch.rand(B, T, generator=gen, dtype=DT))  # [-6, -2]
        # r on a coarse grid of 1/64 so that random duplicates (ties) occur naturally
        r = torch.round((torch.rand(B, T, generator=gen, dtype=DT) * 3.0 - 1.5) * 64.0) / 64.0
        inp[f"oracle_ref_{side}_logps"] = lor
        inp[f"oracle_{side}_logps"] = lor + r
    for b, side, rs in r_rows:
        m = mc if side == "c" else mr
        name = "chosen" if side == "c" else "rejected"
        pl = positions(m, b)
        for t, v in zip(pl, rs):
            inp[f"oracle_{name}_logps"][b, t] = inp[f"oracle_ref_{name}_logps"][b, t] + v
    for k in list(inp):
        if k.startswith("oracle"):
            assert torch.equal(f32(inp[k]), inp[k]) and (inp[k] <= -0.01).all() and (inp[k] >= -8).all()
    return inp, mc, mr


def build_tisdpo(seed, rows, T, raw_rows=()):
    """raw_rows: (b, side, [target rounded raw values per completion token without EOS])."""
    gen = torch.Generator().manual_seed(seed)
    mc, mr = make_masks(rows, T)
    B = len(rows)
    inp = policy_ref(gen, B, T, True)
    targets = {}
    for b, side, vals in raw_rows:
        targets[(b, side)] = vals
    for side, m in (("chosen", mc), ("rejected", mr)):
        pos = grid(-2.0 - 4.0 * torch.rand(B, T, generator=gen, dtype=DT))  # [-6, -2]
        diff = grid(torch.rand(B, T, generator=gen, dtype=DT) * 3.0 - 1.5)
        # an odd multiple of 1/8 is an exact rounding tie (x * 100 = k + 1/2): keep those for the
        # targets marked "exact" only
        diff = torch.where(torch.remainder(diff * 1024.0, 256.0) == 128.0, diff + 1.0 / 1024.0, diff)
        for b in range(B):
            key = (b, side[0])
            if key in targets:
                pl = positions(m, b)[:-1]
                assert len(pl) == len(targets[key])
                for t, v in zip(pl, targets[key]):
                    if isinstance(v, tuple):  # ("exact", d): the difference itself (rounding ties)
                        diff[b, t] = v[1]
                    else:
                        j = float(torch.rand((), generator=gen, dtype=DT)) * 0.008 - 0.004
                        d = round((v + j) * 1024.0) / 1024.0
                        assert round(d, 2) == v and (d * 1024.0) % 256.0 != 128.0, (d, v)
                        diff[b, t] = d
        inp[f"pos_{side}_logps"] = pos
        inp[f"neg_{side}_logps"] = pos + diff
    for k in ("pos_chosen_logps", "neg_chosen_logps", "pos_rejected_logps", "neg_rejected_logps"):
        assert torch.equal(f32(inp[k]), inp[k]) and (inp[k] <= -0.01).all() and (inp[k] >= -8).all()
    inp["chosen_weight"] = [
        tisdpo_raw(inp["neg_chosen_logps"], inp["pos_chosen_logps"], mc, b, 2) for b in range(B)
    ]
    inp["rejected_weight"] = [
        tisdpo_raw(inp["neg_rejected_logps"], inp["pos_rejected_logps"], mr, b, 2) for b in range(B)
    ]
    return inp, mc, mr


def build_ct(seed, rows, T, vocab=None):
    gen = torch.Generator().manual_seed(seed)
    mc, mr = make_masks(rows, T)
    B = len(rows)
    inp = policy_ref(gen, B, T, True)
    if vocab is None:
        inp["chosen_ce_prob"] = f32(0.02 + 0.96 * torch.rand(B, T, generator=gen, dtype=DT))
        inp["rejected_ce_prob"] = f32(0.02 + 0.96 * torch.rand(B, T, generator=gen, dtype=DT))
    else:
        for side in ("chosen", "rejected"):
            pos_l = f32(2.0 * torch.randn(B, T, vocab, generator=gen, dtype=DT))
            neg_l = f32(pos_l + 1.5 * torch.randn(B, T, vocab, generator=gen, dtype=DT))
            labels = torch.randint(0, vocab, (B, T), generator=gen)
            inp[f"pos_{side}_logits"] = pos_l
            inp[f"neg_{side}_logits"] = neg_l
            inp[f"{side}_labels"] = labels
            inp[f"{side}_ce_prob"] = f32(ce_prob(pos_l, neg_l, labels, 1.0))
    return inp, mc, mr


def build_tgdpo(seed, rows, T, spread):
    gen = torch.Generator().manual_seed(seed)
    mc, mr = make_masks(rows, T)
    B = len(rows)
    inp = policy_ref(gen, B, T, True)
    inp["reward_chosen_logps"] = near(gen, inp["ref_chosen_logps"], spread)
    inp["reward_rejected_logps"] = near(gen, inp["ref_rejected_logps"], spread)
    return inp, mc, mr


# --------------------------------------------------------------------------------------------
# the cases


def tis_params(**kw):
    p = {"beta": 0.1, "tisdpo_transform": "rank_based"}
    p.update(TISDPO_DEFAULTS)
    p.update(kw)
    return p


def ct_params(beta, only_neg, reduction, denom):
    return {
        "beta": beta,
        "ct_only_neg": only_neg,
        "ct_dpo_reduction": reduction,
        "ct_position_denominator": denom,
        "ct_ce_gamma": 1.0,
    }


def ct_layout_same(rows, prompts):
    """Our [B][T] rows = the authors' shifted layout: completions start at column P_b - 1."""
    for (oc, nc, orr, nr), pb in zip(rows, prompts):
        assert oc == orr == pb - 1
    L = max(pb + max(nc, nr) for (oc, nc, orr, nr), pb in zip(rows, prompts))
    return {"prompt_lengths": list(prompts), "padded_length": L}


def cases():
    out = []

    def add(name, method, description, params, built, layout=None):
        out.append((name, method, description, params, built, layout))

    # ---------------- ConfPO
    cp_author = {"beta": 1.5, "simpo_gamma": 1.6, "label_smoothing": 0.0}
    add("confpo_basic", "confpo",
        "author run (beta 1.5, gamma 1.6); left and right padding, different lengths per side",
        cp_author,
        build_confpo(101, [(0, 7, 0, 5), (3, 7, 5, 5), (1, 4, 2, 8), (2, 6, 1, 9)], 10))
    add("confpo_one_token", "confpo",
        "one-token completions (EOS only): k = 0, pair loss 0, still counted in the mean",
        {"beta": 2.0, "simpo_gamma": 0.5, "label_smoothing": 0.0},
        build_confpo(102, [(0, 1, 0, 6), (2, 5, 7, 1), (1, 6, 3, 4)], 8))
    add("confpo_all_equal_ties", "confpo",
        "rows whose tokens are all equal (every token exactly at the mean: strict < keeps none); "
        "row 3 has equal tokens that are not at the mean",
        cp_author,
        build_confpo(103, [(0, 4, 0, 6), (1, 5, 2, 2), (0, 3, 5, 3), (2, 7, 0, 8)], 9,
                     equal_rows=[(0, "c", -5.40625), (1, "r", -4.6875), (2, "c", -6.125), (2, "r", -7.5)]))
    # row 3 of the previous case: two equal tokens below the mean (kept) and a pair above
    b = out[-1][4][0]
    b["policy_chosen_logps"][3, 3] = b["policy_chosen_logps"][3, 5] = -3.25
    b["policy_chosen_logps"][3, 4] = b["policy_chosen_logps"][3, 7] = -0.125
    confpo_side_f32_checks(b["policy_chosen_logps"], out[-1][4][1])
    lq = [math.log(0.25), math.log(0.5), math.log(0.75)]
    add("confpo_mean_tie", "confpo",
        "log-probs of probabilities 0.25, 0.5, 0.75 (as f32): the 0.5 tokens equal the mean in exact "
        "arithmetic; 6.3e-9 above the threshold in f64, exactly on it in f32: not kept",
        {"beta": 2.0, "simpo_gamma": 0.5, "label_smoothing": 0.0},
        build_confpo(106, [(0, 3, 1, 4), (2, 5, 0, 6)], 7, value_rows=[
            (0, "c", lq), (0, "r", [lq[2], lq[1], lq[0], lq[1]]), (1, "c", [lq[1], lq[0], lq[2], lq[1], lq[1]])]))
    add("confpo_label_smoothing", "confpo",
        "CPOConfig defaults beta 0.1, gamma 0.5 with label_smoothing 0.2",
        {"beta": 0.1, "simpo_gamma": 0.5, "label_smoothing": 0.2},
        build_confpo(104, [(0, 12, 0, 9), (4, 8, 1, 11)], 12))
    add("confpo_all_dropped", "confpo",
        "every pair dropped (k = 0 on a side): loss 0, gradients 0",
        cp_author,
        build_confpo(105, [(0, 1, 0, 3), (1, 2, 0, 1)], 5, equal_rows=[(1, "c", -4.6875)]))

    # ---------------- SePO
    sp = {"sepo_ratio": 0.3, "sepo_rejected_ratio": 0.3, "sepo_scale": 1.0}
    add("sepo_basic", "sepo", "ratio 0.3 (README), scale 1; K = int(0.3 * (n - 1))", sp,
        build_sepo(201, [(0, 11, 0, 8), (2, 10, 4, 6), (1, 5, 0, 12)], 12))
    add("sepo_ties", "sepo",
        "ties in r across the cut go to the lower position; token 0 (never a candidate) holds the "
        "largest r on chosen and the smallest on rejected",
        {"sepo_ratio": 0.5, "sepo_rejected_ratio": 0.5, "sepo_scale": 1.0},
        build_sepo(202, [(1, 9, 0, 7), (0, 12, 3, 9)], 12, r_rows=[
            (0, "c", [1.5, 0.5, 0.25, 0.25, 0.75, 0.25, 0.125, 0.25, -0.375]),
            (0, "r", [-1.5, -0.5, 0.25, -0.25, -0.5, 0.0, -0.25]),
            (1, "c", [0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]),
            (1, "r", [0.125, -0.75, 0.125, -0.75, 0.125, -0.75, -0.75, 0.5, -0.75]),
        ]))
    add("sepo_ratio_scale", "sepo",
        "separate rejected ratio (0.6 chosen, 0.25 rejected) and sepo_scale 2.5",
        {"sepo_ratio": 0.6, "sepo_rejected_ratio": 0.25, "sepo_scale": 2.5},
        build_sepo(203, [(0, 8, 1, 9), (3, 6, 0, 10)], 10))
    add("sepo_float_boundary", "sepo",
        "int(k * N) on the float64 product: 0.57 * 100 = 56.99999999999999 -> 56 (chosen, row 0) "
        "and 0.58 * 50 = 28.999999999999996 -> 28 (rejected, row 0)",
        {"sepo_ratio": 0.57, "sepo_rejected_ratio": 0.58, "sepo_scale": 1.0},
        build_sepo(204, [(2, 101, 0, 51), (0, 40, 50, 55)], 105))

    # ---------------- TIS-DPO
    add("tisdpo_rank_based", "tisdpo",
        "rank_based (README command); rounded duplicates tie (stable ascending sort: the earlier "
        "token gets the lower weight); row 1 chosen has one token besides EOS (weight 1.0); "
        "exact rounding ties 0.125 -> 0.12 and -0.375 -> -0.38 (ties to even)",
        tis_params(),
        build_tisdpo(301, [(0, 8, 0, 6), (2, 2, 1, 9), (1, 7, 3, 5)], 10, raw_rows=[
            (0, "c", [-0.12, ("exact", -0.125), 0.31, -0.12, 1.07, -0.5, ("exact", -0.375)]),
            (0, "r", [0.44, 0.44, -0.2, 0.44, 0.05]),
            (1, "c", [0.83]),
            (1, "r", [("exact", 0.125), 0.12, -0.71, 0.12, 0.0, 0.0, 0.93, 0.12]),
        ]))
    add("tisdpo_rank_based_scaled", "tisdpo",
        "rank_based with min_scale 0.5, max_scale 2.0, beta 0.5; one-token-plus-EOS on both sides",
        tis_params(beta=0.5, tisdpo_min_scale=0.5, tisdpo_max_scale=2.0),
        build_tisdpo(302, [(0, 2, 1, 2), (0, 9, 0, 11), (5, 6, 2, 4)], 11))
    add("tisdpo_binary_top50", "tisdpo",
        "binary with top_percent 50: K = int(n * 50 / 100); a tie group straddling the cut gets 0 "
        "as a whole",
        tis_params(tisdpo_transform="binary", tisdpo_top_percent=50.0),
        build_tisdpo(303, [(0, 7, 0, 8), (3, 6, 1, 10)], 11, raw_rows=[
            # chosen u = -raw = [0.9, 0.12, -0.2, 0.12, 0.5, -0.4]: K = 3, the 0.12 pair straddles
            (0, "c", [-0.9, -0.12, 0.2, -0.12, -0.5, 0.4]),
            # rejected u = raw: K = int(7 * 50 / 100) = 3: the 0.3 pair sits inside the top 3
            (0, "r", [0.3, 0.1, 0.3, -0.6, 0.7, 0.1, -0.2]),
            # chosen u = [-0.05, 0.25, 0.25, -0.61, -0.05]: K = 2, the 0.25 pair fills it exactly
            (1, "c", [0.05, -0.25, -0.25, 0.61, 0.05]),
        ]))
    add("tisdpo_binary_default", "tisdpo",
        "binary with the default top_percent 100: every weight 1, EOS 0 (plain DPO minus EOS)",
        tis_params(tisdpo_transform="binary"),
        build_tisdpo(304, [(0, 5, 2, 7), (1, 8, 0, 3)], 9))
    add("tisdpo_origin", "tisdpo", "origin: the raw u as weights (negative weights)",
        tis_params(tisdpo_transform="origin"),
        build_tisdpo(305, [(0, 9, 0, 6), (2, 4, 1, 8), (0, 3, 4, 5)], 10))
    add("tisdpo_threshold", "tisdpo", "threshold: clip(u, -1, 1) with values beyond both bounds",
        tis_params(tisdpo_transform="threshold"),
        build_tisdpo(306, [(0, 8, 1, 7), (3, 7, 0, 10)], 10, raw_rows=[
            (0, "c", [1.37, -0.5, -1.21, 0.99, -1.0, 1.0, 0.0]),
            (0, "r", [-1.42, 1.13, 0.25, 1.5, -0.07, 0.61]),
        ]))
    add("tisdpo_threshold_and_scale", "tisdpo",
        "threshold_and_scale (min_val -1.5, max_val 1.5 -> 0.7..1.3), values beyond both bounds",
        tis_params(tisdpo_transform="threshold_and_scale", beta=0.2),
        build_tisdpo(307, [(1, 8, 0, 9), (0, 5, 3, 6)], 10, raw_rows=[
            (0, "c", [1.52, -1.74, 0.3, 1.5, -1.5, 0.0, 1.25]),
            (0, "r", [-1.61, 1.88, 0.73, -0.2, 1.49, -1.51, 0.06, 0.5]),
        ]))

    # ---------------- critical_token (CT-DPO)
    rows = [(1, 6, 1, 8), (3, 4, 3, 3), (0, 9, 0, 5)]
    prompts = [2, 4, 1]
    lay = ct_layout_same(rows, prompts)
    T = lay["padded_length"] - 1
    add("ct_position_only_neg", "critical_token",
        "code default: only_neg, per-position sigma on the authors' padded layout (this case's "
        "[B][T] rows are that layout), mean over B*(T-1)",
        ct_params(0.1, True, "position", len(rows) * T), build_ct(401, rows, T), lay)
    add("ct_position_both", "critical_token",
        "only_neg false (chosen weights p^CE, EOS 1), position reduction, beta 0.5",
        ct_params(0.5, False, "position", len(rows) * T), build_ct(402, rows, T), lay)
    add("ct_sequence_only_neg", "critical_token", "sequence reduction (paper form), only_neg",
        ct_params(0.1, True, "sequence", None), build_ct(403, [(0, 7, 2, 5), (4, 5, 0, 9)], 10))
    add("ct_sequence_both", "critical_token", "sequence reduction, only_neg false, beta 0.3",
        ct_params(0.3, False, "sequence", None), build_ct(404, [(1, 3, 0, 8), (2, 8, 5, 2), (0, 4, 0, 4)], 10))
    # chosen and rejected start at different columns in this case's rows (left padding per side);
    # the authors' layout (prompt lengths 3 and 2) pairs them by completion index
    rows = [(0, 5, 4, 7), (6, 5, 2, 3)]
    add("ct_position_offsets", "critical_token",
        "position reduction where the [B][T] rows put chosen and rejected at different columns: "
        "pairing is by completion index; the denominator comes from the authors' layout, not T",
        ct_params(0.2, False, "position", 2 * (max(3 + 7, 2 + 5) - 1)),
        build_ct(405, rows, 11), {"prompt_lengths": [3, 2], "padded_length": max(3 + 7, 2 + 5)})
    rows = [(2, 5, 2, 4), (1, 3, 1, 6)]
    prompts = [3, 2]
    lay = ct_layout_same(rows, prompts)
    T = lay["padded_length"] - 1
    add("ct_logits_position", "critical_token",
        "p^CE from full-vocabulary logits (V = 7): softmax(2 pos - neg)[label]; position, only_neg false",
        ct_params(0.1, False, "position", len(rows) * T), build_ct(406, rows, T, vocab=7), lay)
    add("ct_logits_sequence", "critical_token",
        "p^CE from logits (V = 7), sequence reduction, only_neg",
        ct_params(0.1, True, "sequence", None), build_ct(407, [(0, 6, 1, 4), (3, 2, 0, 7)], 8, vocab=7))

    # ---------------- TGDPO
    add("tgdpo_default", "tgdpo", "example config beta 0.1, alpha 0.5; a one-token completion",
        {"beta": 0.1, "tgdpo_alpha": 0.5},
        build_tgdpo(501, [(0, 8, 0, 5), (2, 1, 1, 9), (4, 6, 0, 10)], 10, 0.7))
    add("tgdpo_negative_beta", "tgdpo",
        "beta 0.5, alpha 4: |alpha*beta*r_hat| > 1 on many tokens, per-token betas <= 0 (no clip)",
        {"beta": 0.5, "tgdpo_alpha": 4.0},
        build_tgdpo(502, [(1, 7, 0, 8), (0, 9, 3, 6)], 10, 1.5))
    add("tgdpo_alpha0", "tgdpo", "alpha 0: plain sigmoid DPO on the completion sums",
        {"beta": 0.1, "tgdpo_alpha": 0.0},
        build_tgdpo(503, [(0, 6, 2, 7), (3, 5, 0, 4), (1, 9, 1, 3), (0, 2, 6, 4)], 10, 0.7))
    return out


PER_TOKEN_2D = [
    "policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
    "oracle_chosen_logps", "oracle_rejected_logps", "oracle_ref_chosen_logps", "oracle_ref_rejected_logps",
    "pos_chosen_logps", "pos_rejected_logps", "neg_chosen_logps", "neg_rejected_logps",
    "chosen_ce_prob", "rejected_ce_prob", "reward_chosen_logps", "reward_rejected_logps",
]
PER_TOKEN_3D = ["pos_chosen_logits", "neg_chosen_logits", "pos_rejected_logits", "neg_rejected_logits"]


def garbage_inputs(inp, mc, mr, table):
    g = {}
    for i, k in enumerate(PER_TOKEN_2D + PER_TOKEN_3D):
        if k in inp:
            m = mc if "chosen" in k else mr
            g[k] = with_garbage(inp[k], m, 3 * i, table)
            assert torch.isfinite(g[k]).all()
    for k in ("chosen_labels", "rejected_labels", "chosen_weight", "rejected_weight"):
        if k in inp:
            g[k] = inp[k]
    return g


def run(method, inp, mc, mr, params, layout):
    if method == "critical_token":
        return critical_token(inp, mc, mr, params, layout)
    return METHODS[method](inp, mc, mr, params)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "fixtures/token_methods.json"
    out_cases = []
    for name, method, description, params, (inp, mc, mr), layout in cases():
        B, T = mc.shape
        for k in PER_TOKEN_2D + PER_TOKEN_3D:
            if k in inp:
                assert torch.equal(f32(inp[k]), inp[k]), (name, k)
                m = mc if "chosen" in k else mr
                if k.endswith("logps"):
                    sel = inp[k][m]
                    assert (sel <= -0.01).all() and (sel >= -8.0).all(), (name, k)
        g1 = garbage_inputs(inp, mc, mr, GARBAGE)
        g2 = garbage_inputs(inp, mc, mr, ALT_GARBAGE)
        expected = run(method, g1, mc, mr, params, layout)
        assert expected == run(method, g2, mc, mr, params, layout), (name, "garbage leaked")
        inputs = {"chosen_loss_mask": imask(mc), "rejected_loss_mask": imask(mr)}
        for k in PER_TOKEN_2D:
            if k in g1:
                inputs[k] = mat(g1[k])
        for k in PER_TOKEN_3D:
            if k in g1:
                inputs[k] = cube(g1[k])
        for k in ("chosen_labels", "rejected_labels"):
            if k in g1:
                inputs[k] = [[int(v) for v in row] for row in g1[k]]
        for k in ("chosen_weight", "rejected_weight"):
            if k in g1:
                inputs[k] = g1[k]
        case = {
            "name": name,
            "method": method,
            "description": description,
            "params": params,
            "batch_size": B,
            "seq_len": T,
        }
        if layout is not None:
            case["authors_layout"] = {
                "prompt_lengths": layout["prompt_lengths"],
                "padded_length": layout["padded_length"],
                "positions": layout["padded_length"] - 1,
            }
        case["inputs"] = inputs
        case["expected"] = expected
        out_cases.append(case)
    doc = {
        "set": "fixtures",
        "format": "token_methods/1",
        "dtype": "float64",
        "generator": "tools/make_token_method_fixtures.py",
        "spec": "tools/token-methods-spec.md",
        "versions": {"python": platform.python_version(), "torch": torch.__version__.split("+")[0]},
        "cases": out_cases,
    }
    text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    with open(path, "w") as f:
        f.write(text + "\n")
    counts = {}
    for c in out_cases:
        counts[c["method"]] = counts.get(c["method"], 0) + 1
    print(f"wrote {path}: {len(out_cases)} cases {counts}, {len(text) + 1} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
