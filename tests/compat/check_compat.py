"""Independent-consumer check of a shardq compressed-tensors checkpoint.

  python check_compat.py --model ORIG --quantized OUT --dequant DUMP.safetensors
                         [--data EVAL --shardq-json EVAL.json --ppl-tol 0.005]

(a) Loads OUT the way vLLM/transformers read compressed-tensors: transformers'
    CompressedTensorsHfQuantizer builds ModelCompressor.from_compression_config
    from config.json's quantization_config, loads weight_packed/weight_scale/...
    into the quantized Linear modules and runs ModelCompressor.decompress_model.
    Every decompressed Linear weight must equal shardq's --dump-dequant tensor bit
    for bit: both sides compute (q - zero_point) * scale in the scale's dtype
    (fp32 here), one multiply per element, so there is no rounding freedom.
(b) With --data: perplexity of that loaded model and of the original fp32 model
    with the README protocol (per row, mean NLL of tokens 1..T-1; PPL = exp of
    the mean over all scored tokens), compared with `shardq eval --json`.
Prints one line per check; exit 0 all passed, 1 a check failed.
"""
import argparse
import json
import math
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from transformers.utils.quantization_config import CompressedTensorsConfig

failures = []


def check(ok, msg):
    print(("PASS " if ok else "FAIL ") + msg, flush=True)
    if not ok:
        failures.append(msg)


def load_quantized(out_dir):
    """transformers + compressed-tensors, decompressed to dense weights."""
    qc = CompressedTensorsConfig(run_compressed=False)
    model = AutoModelForCausalLM.from_pretrained(
        out_dir, quantization_config=qc, torch_dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def compare_weights(model, dump_path):
    dump = load_file(dump_path)
    params = dict(model.named_parameters())
    n_bad = 0
    for name, ref in sorted(dump.items()):
        got = params.get(name)
        if got is None:
            check(False, f"{name}: in the dequant dump, not in the model transformers loaded")
            n_bad += 1
            continue
        got = got.detach().to(torch.float32)
        if tuple(got.shape) != tuple(ref.shape):
            check(False, f"{name}: shape {tuple(got.shape)} from compressed-tensors vs {tuple(ref.shape)} in shardq's dump")
            n_bad += 1
            continue
        diff = (got - ref).abs()
        n_diff = int((got != ref).sum())
        if n_diff:
            n_bad += 1
            check(False, f"{name}: {n_diff}/{ref.numel()} elements differ, max |diff| {diff.max().item():.3g}")
    check(n_bad == 0 and len(dump) > 0,
          f"(a) {len(dump)} decompressed Linear weights equal shardq's dequantized weights bit for bit")


@torch.no_grad()
def perplexity(model, ids, batch=16):
    nll_sum, count = 0.0, 0
    for i in range(0, ids.shape[0], batch):
        x = ids[i:i + batch]
        logits = model(input_ids=x).logits.to(torch.float64)  # (B, T, V)
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok = logp.gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        nll_sum += -tok.sum().item()
        count += tok.numel()
    return math.exp(nll_sum / count)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--quantized", required=True)
    ap.add_argument("--dequant", required=True)
    ap.add_argument("--data")
    ap.add_argument("--shardq-json")
    ap.add_argument("--ppl-tol", type=float, default=0.005)
    ap.add_argument("--fp32-ppl", type=float, default=5.7585, help="README's fp32 figure")
    a = ap.parse_args()
    torch.set_num_threads(1)

    cfg = json.load(open(f"{a.quantized}/config.json"))
    qcfg = cfg.get("quantization_config", {})
    print(f"config: format={qcfg.get('format')} version={qcfg.get('version')}")
    model = load_quantized(a.quantized)
    compare_weights(model, a.dequant)

    if a.data:
        ids = load_file(a.data)["input_ids"].to(torch.long)
        sq = json.load(open(a.shardq_json)) if a.shardq_json else {}
        ppl_q = perplexity(model, ids)
        ref = sq.get("ppl_quantized")
        check(ref is not None and abs(ppl_q / ref - 1) <= a.ppl_tol,
              f"(b) quantized PPL transformers {ppl_q:.4f} vs shardq eval {ref} (tol {a.ppl_tol:.1%})")
        orig = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32,
                                                    attn_implementation="eager").eval()
        ppl_o = perplexity(orig, ids)
        ref = sq.get("ppl_model")
        check(ref is not None and abs(ppl_o / ref - 1) <= a.ppl_tol,
              f"(b) fp32 PPL transformers {ppl_o:.4f} vs shardq eval {ref} (tol {a.ppl_tol:.1%})")
        check(abs(ppl_o / a.fp32_ppl - 1) <= a.ppl_tol,
              f"(b) fp32 PPL transformers {ppl_o:.4f} vs README {a.fp32_ppl}")
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
