"""Plots (matplotlib, optional)."""
import math
import os

from .common import *  # noqa: F401,F403
from .runs import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403


def axis_scale(values, decades=1.0):
    """'log' when the positive values span more than `decades` decades (max / min > 10), else
    'linear'"""
    v = [x for x in values if x is not None and x > 0]
    if len(v) < 2 or any(x is not None and x <= 0 for x in values):
        return "linear"
    return "log" if math.log10(max(v) / min(v)) > decades else "linear"


def place_labels(anchors, sizes, pad=3.0, bounds=None):
    """offsets (dx, dy), in pixels from each anchor point (x, y), for labels of the given (w, h)
    pixel sizes, so that no two labels' boxes overlap: each label takes the first free place of
    up-right, down-right, up-left, down-left of its point, then further up or down; inside
    bounds (x0, y0, x1, y1) where a free place there exists"""
    boxes = []

    def free(b):
        inside = bounds is None or (b[0] >= bounds[0] and b[1] >= bounds[1] and b[2] <= bounds[2] and b[3] <= bounds[3])
        return inside and all(b[2] <= o[0] or o[2] <= b[0] or b[3] <= o[1] or o[3] <= b[1] for o in boxes)

    out = []
    for (x, y), (w, h) in zip(anchors, sizes):
        cands = [(pad, pad), (pad, -pad - h), (-pad - w, pad), (-pad - w, -pad - h)]
        for k in range(1, 2 * len(anchors) + 3):
            step = k * (h + pad)
            cands += [(pad, pad + step), (pad, -pad - h - step), (-pad - w, pad + step), (-pad - w, -pad - h - step)]
        for dx, dy in cands:
            b = (x + dx, y + dy, x + dx + w, y + dy + h)
            if free(b):
                break
        else:  # nowhere free inside the bounds: the first place free of other labels
            saved, bounds = bounds, None
            for dx, dy in cands:
                b = (x + dx, y + dy, x + dx + w, y + dy + h)
                if free(b):
                    break
            bounds = saved
        boxes.append(b)
        out.append((dx, dy))
    return out


def annotate_points(ax, points, fontsize=8):
    """labels at data points (x, y, text) without overlaps (place_labels in display pixels)"""
    if not points:
        return
    fig = ax.figure
    fig.canvas.draw()  # final limits and scales
    px = fig.dpi / 72.0 * fontsize
    anchors = [tuple(ax.transData.transform((x, y))) for x, y, _ in points]
    sizes = [(0.62 * px * len(t), 1.25 * px) for _, _, t in points]
    box = ax.get_window_extent()  # the axes in display pixels: labels stay inside where they can
    for (x, y, t), (dx, dy) in zip(points, place_labels(anchors, sizes, bounds=(box.x0, box.y0, box.x1, box.y1))):
        ax.annotate(t, (x, y), textcoords="offset pixels", xytext=(dx, dy), fontsize=fontsize, va="bottom", ha="left")


def plots(runs, groups, model, predictions, out_dir, notes, args):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        notes.add("plots skipped: matplotlib is missing (%s); Debian: apt-get install python3-matplotlib" % e)
        return []
    made = []

    def save(fig, name, layout=True):
        p = os.path.join(out_dir, name)
        if layout:
            fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(name)

    series = sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
    # throughput and efficiency vs ranks
    for what, ylabel, name in (("tok_s", "tokens/s (prompt + completion)", "throughput.png"),
                               ("efficiency", "parallel efficiency", "efficiency.png")):
        try:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            all_ranks = set()
            labels, values = [], []
            for (mk, batch, _), g in series:
                g = sorted([x for x in g if x.get(what) is not None], key=lambda x: (x["ranks"], x["pp"]))
                if not g:
                    continue
                xs = [x["ranks"] for x in g]
                ys = [x[what] for x in g]
                # every run a marker; the line joins the best grid of each rank count
                best = {}
                for x in g:
                    if x["ranks"] not in best or x[what] > best[x["ranks"]]:
                        best[x["ranks"]] = x[what]
                bx = sorted(best)
                line, = ax.plot(bx, [best[k] for k in bx], "-", label="%s, batch %d, %s prompts"
                                % (model_label(g[0]), batch, fmt(g[0]["prompts"])))
                ax.plot(xs, ys, "o", color=line.get_color())
                all_ranks.update(xs)
                values += ys
                labels += [(x["ranks"], x[what], grid_name(x)) for x in g]
                if what == "tok_s":
                    rmin = min(xs)
                    base = median([x["tok_s"] for x in g if x["ranks"] == rmin])
                    xr = sorted(set(xs))
                    ax.plot(xr, [base * x / rmin for x in xr], ":", color=line.get_color(), alpha=0.6)
                    pr = [(x["ranks"], x["pred_tok_s"]) for x in g if x.get("pred_tok_s")]
                    if pr:
                        ax.plot([p[0] for p in pr], [p[1] for p in pr], "x", color=line.get_color(), alpha=0.8)
            yscale = axis_scale(values)  # several models: tok/s may span decades
            if yscale == "log":
                ax.set_yscale("log")
            if what == "efficiency":
                ax.axhline(1.0, color="gray", lw=0.8, ls=":")
                if yscale == "linear":
                    ax.set_ylim(bottom=0)
            ax.set_xlabel("ranks")
            ax.set_ylabel(ylabel)
            ax.set_xscale("log", base=2)
            if all_ranks:
                ticks = sorted(all_ranks)
                ax.set_xticks(ticks)
                ax.set_xticklabels([str(t) for t in ticks])
                ax.minorticks_off()
                if len(ticks) == 1:
                    ax.set_xlim(ticks[0] / 1.5, ticks[0] * 1.5)
            ax.set_title("%s vs ranks%s" % ("throughput" if what == "tok_s" else "efficiency",
                                            " (dotted: ideal; x: model)" if what == "tok_s" else ""))
            if ax.get_legend_handles_labels()[0]:  # below the axes: never over the points or their labels
                ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1, frameon=False)
            fig.tight_layout()
            annotate_points(ax, labels)  # after the layout: the labels' pixel places stay
            save(fig, name, layout=False)
        except Exception as e:
            notes.add("plot %s failed: %s" % (name, e))
    # time per category per rank, one panel per run
    try:
        rr = [r for r in runs if r["per_rank"]]
        if len(rr) > args.max_panels:
            notes.add("categories.png shows the first %d of %d runs (--max-panels)" % (args.max_panels, len(rr)))
            rr = rr[:args.max_panels]
        if rr:
            cols = min(3, len(rr))
            rows = -(-len(rr) // cols)
            fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
            for i, r in enumerate(rr):
                ax = axes[i // cols][i % cols]
                pr = sorted(r["per_rank"], key=lambda x: x["rank"])
                xs = list(range(len(pr)))
                bottom = [0.0] * len(pr)
                for c in CATS:
                    v = [x["seconds"][c] for x in pr]
                    ax.bar(xs, v, bottom=bottom, color=CAT_COLORS[c], label=c, width=0.7)
                    bottom = [b + y for b, y in zip(bottom, v)]
                if r["wall_s"]:
                    ax.axhline(r["wall_s"], color="black", lw=0.8, ls="--")
                every = max(1, -(-len(pr) // 8))  # at most 8 tick labels a panel: they never overlap
                ax.set_xticks(xs[::every])
                ax.set_xticklabels(["%d\ns%d t%d" % (x["rank"], x["stage"], x["tp"]) for x in pr[::every]], fontsize=7)
                ax.set_title("%s: %s, %s" % (r["label"], grid_name(r), r["model"]["name"]), fontsize=8)
                ax.set_ylabel("seconds", fontsize=8)
            for j in range(len(rr), rows * cols):
                axes[j // cols][j % cols].axis("off")
            h, l = axes[0][0].get_legend_handles_labels()
            # as many legend columns as the figure's width holds (about an inch each), the rows above the panels
            ncol = max(1, min(len(CATS), int(4.2 * cols / 1.1)))
            lrows = -(-len(CATS) // ncol)
            fig.legend(h, l, loc="upper center", ncol=ncol, fontsize=8, bbox_to_anchor=(0.5, 1.0))
            fig.tight_layout(rect=(0, 0, 1, 1 - (0.06 + 0.2 * lrows) / (3.2 * rows)))
            p = os.path.join(out_dir, "categories.png")
            fig.savefig(p, dpi=110)
            plt.close(fig)
            made.append("categories.png")
    except Exception as e:
        notes.add("plot categories.png failed: %s" % e)
    # pipeline bubble vs pp
    try:
        fig, ax = plt.subplots(figsize=(6, 4))
        any_pt = False
        for (mk, batch, _), g in series:
            g = sorted([x for x in g if x["bubble"] is not None], key=lambda x: (x["pp"], x["tp"]))
            if not g:
                continue
            any_pt = True
            line, = ax.plot([x["pp"] for x in g], [x["bubble"] for x in g], "o", label="%s, batch %d: measured" % (model_label(g[0]), batch))
            pg = [x for x in g if x.get("pred_bubble") is not None]
            if pg:
                ax.plot([x["pp"] for x in pg], [x["pred_bubble"] for x in pg], "x", color=line.get_color(), label="model")
        if any_pt:
            pps = sorted({x["pp"] for x in runs if x["bubble"] is not None})
            ax.set_xticks(pps)
            ax.set_xlim(min(pps) - 0.5, max(pps) + 0.5)
            ax.set_xlabel("pipeline stages (pp)")
            ax.set_ylabel("pipeline bubble (mean wait / wall)")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=8)
            ax.set_title("pipeline bubble vs pp")
            save(fig, "bubble.png")
        else:
            plt.close(fig)
            notes.add("bubble.png: no run reports pipeline_bubble")
    except Exception as e:
        notes.add("plot bubble.png failed: %s" % e)
    # predictions vs nodes
    try:
        pts = {}
        for p in predictions:
            if p.get("nodes_series") and p.get("tok_s"):
                pts.setdefault(p["model"], []).append((p["nodes"], p["tok_s"]))
        if pts:
            fig, ax = plt.subplots(figsize=(6, 4))
            for name, v in sorted(pts.items()):
                v = sorted(v)
                ax.plot([x[0] for x in v], [x[1] for x in v], "o-", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ticks = sorted({x[0] for v in pts.values() for x in v})
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(t) for t in ticks])
            ax.minorticks_off()
            from matplotlib.ticker import FuncFormatter
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: "%g" % y))
            ax.set_xlabel("nodes")
            ax.set_ylabel("predicted tokens/s (best grid)")
            ax.set_title("model prediction: %g Gb/s, %g us network" % (args.net_gbps, args.net_latency_us))
            ax.legend(fontsize=8)
            save(fig, "prediction.png")
    except Exception as e:
        notes.add("plot prediction.png failed: %s" % e)
    return made
