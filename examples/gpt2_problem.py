"""A Hugging Face GPT-2 as a landscape problem: a problem file for the `landscape` command, and a trainer.

The model is built from a config (no download): GPT-2 with its default attention, at a size set by
--width and --layers, over the characters of Python's documentation (``landscape.language``: the text
that ships with Python). Batches are Hugging Face dicts {"input_ids", "labels"}; the loss is the model's
own ``.loss`` (no loss_fn), the mean over label tokens.

    python examples/gpt2_problem.py --out gpt2/ [--steps 200]     # trains seeds 0 and 1: gpt2/seed0, gpt2/seed1
    landscape spectrum --problem examples/gpt2_problem.py:problem --checkpoint gpt2/seed0 --k 5 --out gpt2/spectrum
    landscape scan --problem examples/gpt2_problem.py:problem --checkpoint gpt2/seed0 \\
        --grid -1:1:21 --grid -1:1:21 --out gpt2/scan
    landscape connect --problem examples/gpt2_problem.py:problem --a gpt2/seed0 --b gpt2/seed1 --out gpt2/connect

``save_pretrained`` folders (model.safetensors) load as checkpoints; the problem's arguments
(``--problem-arg width=128``) must match the checkpoint's.
"""

import argparse
import time

import torch
import transformers

from landscape import language
from landscape.problems import Problem

transformers.logging.set_verbosity_error()


def build(width: int = 128, layers: int = 2, heads: int = 4, context: int = 64, seed: int = 0):
    """A randomly initialised GPT-2 LM over ``landscape.language.VOCAB``."""
    config = transformers.GPT2Config(vocab_size=len(language.VOCAB), n_positions=context, n_embd=width,
                                     n_layer=layers, n_head=heads, bos_token_id=0, eos_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.GPT2LMHeadModel(config).eval()


def problem(width: int = 128, layers: int = 2, heads: int = 4, context: int = 64, examples: int = 64) -> Problem:
    """The problem file's factory: the model at its initialisation (give --checkpoint) and ``examples`` windows."""
    ids = language.encode(language.corpus())
    model = build(width, layers, heads, context)
    return Problem(f"gpt2-{width}x{layers}", model, None, language.windows(ids[: int(0.9 * len(ids))], context, examples),
                   batch_size=32, description=f"Hugging Face GPT-2 ({layers} layers, width {width}, {heads} heads, "
                                              f"{sum(p.numel() for p in model.parameters()):,} parameters) on "
                                              f"Python's documentation, its own .loss over label tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpt2", help="where seed0/ and seed1/ go (default gpt2/)")
    parser.add_argument("--steps", type=int, default=200, help="Adam steps per seed (default 200)")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    ids = language.encode(language.corpus())
    train = ids[: int(0.9 * len(ids))]
    for seed in (0, 1):
        model = build(args.width, args.layers, seed=seed).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        for _ in range(args.steps):
            starts = torch.randint(0, len(train) - 64, (32,), generator=g).tolist()
            X = torch.stack([train[s:s + 64] for s in starts])
            optimizer.zero_grad(set_to_none=True)
            loss = model(input_ids=X, labels=X).loss
            loss.backward()
            optimizer.step()
        model.eval().save_pretrained(f"{args.out}/seed{seed}")
        print(f"seed {seed}: loss {loss.item():.3f} after {args.steps} steps in {time.perf_counter() - start:.1f} s; "
              f"saved {args.out}/seed{seed}")


if __name__ == "__main__":
    main()
