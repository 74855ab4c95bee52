"""Draw BENCHMARKS.md's current figures as a bar chart: docs/_static/benchmarks.png.

Reads the samples/s table under "Current figures" (the first table whose header starts with
"| network | fastbp |"), so the chart always shows the figures the page states. Run it after
replacing them: ``python benchmarks/plot_figures.py [--out PATH]``.
"""
import argparse
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def read_table(text):
    """{network: {library: samples/s}} from the first "| network | fastbp |" table of ``text``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| network | fastbp |"))
    libraries = [c.strip() for c in lines[start].strip("|").split("|")][1:]
    table = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        network = cells[0].split(":")[0]
        table[network] = {lib: float(re.match(r"[\d,.]+", cell).group().replace(",", ""))
                          for lib, cell in zip(libraries, cells[1:])}
    return table


def plot(table, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    libraries = list(next(iter(table.values())))
    networks = list(table)
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(libraries)
    for k, lib in enumerate(libraries):
        ax.bar(np.arange(len(networks)) + (k - (len(libraries) - 1) / 2) * width,
               [table[n][lib] for n in networks], width, label=lib)
    ax.set_xticks(np.arange(len(networks)), networks)
    ax.set_yscale("log")
    ax.set_ylabel("training samples / s (log scale)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "_static" / "benchmarks.png"))
    args = parser.parse_args(argv)
    plot(read_table((ROOT / "BENCHMARKS.md").read_text()), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
