"""Converting released text-encoder folders (HF T5 / CLIP layouts, written here with random weights) into the
twins: sharded ``.bin`` and ``.safetensors`` with their index, fp16/bf16/fp32, the decoder / vision tower /
tied alias dropped, strict failures naming the key; the loaded twins reproduce transformers' own loader."""
import json
import os

import numpy as np
import pytest

import mindspore as ms
import torch
import transformers

import converters
from converters import ConversionError
import ms_impl.models.text_encoder as M
import pt_reference.models.text_encoder as P

T5_KW = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
             relative_attention_num_buckets=8, relative_attention_max_distance=16)
CLIP_TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=20, bos_token_id=0, eos_token_id=2, pad_token_id=1)
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def write_sharded(folder, tensors, safe, shard_bytes=40_000):
    """Shards + index the way HF releases are laid out (``model-0000K-of-0000N.safetensors`` +
    ``model.safetensors.index.json``, or ``pytorch_model-...bin`` + ``pytorch_model.bin.index.json``)."""
    from safetensors.torch import save_file

    shards, cur, size = [], {}, 0
    for k, v in tensors.items():
        if cur and size + v.numel() * v.element_size() > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v.contiguous()
        size += v.numel() * v.element_size()
    shards.append(cur)
    stem, ext = ("model", "safetensors") if safe else ("pytorch_model", "bin")
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}"
        if safe:
            save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
        else:
            torch.save(shard, os.path.join(folder, name))
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    with open(os.path.join(folder, f"{stem}.{ext}.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)


def write_t5_release(folder, dtype="fp32", safe=True):
    """An HF T5 v1.1 folder as released (google/t5-v1_1-xxl layout): the whole encoder-decoder with
    ``shared``, ``encoder.embed_tokens``, ``decoder.embed_tokens`` and an untied ``lm_head``, sharded, indexed."""
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**T5_KW))
    os.makedirs(folder)
    model.config.to_json_file(os.path.join(folder, "config.json"))
    tensors = {k: v.to(TORCH_DTYPES[dtype]).clone() for k, v in model.state_dict().items()}
    tensors["lm_head.weight"] = torch.randn_like(tensors["lm_head.weight"])   # v1.1: not tied
    write_sharded(folder, tensors, safe)
    return model


def t5_ids():
    rng = np.random.default_rng(0)
    ids = rng.integers(2, T5_KW["vocab_size"], (2, 12))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 6] = 1
    return ids * mask, mask


@pytest.mark.parametrize("dtype,safe", [("fp32", True), ("fp16", False), ("bf16", True)])
def test_t5_release_folder_loads_into_both_twins(tmp_path, dtype, safe):
    folder = str(tmp_path / "t5-v1_1")
    write_t5_release(folder, dtype, safe)
    files = os.listdir(folder)
    index = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
    assert index in files and len([f for f in files if f.endswith((".bin", ".safetensors"))]) > 1
    stored = json.load(open(os.path.join(folder, index)))["weight_map"]
    assert any(k.startswith("decoder.") for k in stored) and "lm_head.weight" in stored

    ms_model = M.T5EncoderModel.from_pretrained(folder)
    pt_model = P.T5EncoderModel.from_pretrained(folder)
    hf = transformers.T5EncoderModel.from_pretrained(folder, dtype=torch.float32).eval()
    # bit-exact weights: the encoder tensors of the folder, widened to fp32
    hf_sd = {k: v.float().numpy() for k, v in hf.state_dict().items()}
    ms_sd = converters.model_tensors(ms_model, "ms")
    assert set(ms_sd) == set(converters.model_tensors(pt_model, "pt")) == set(hf_sd) - {"encoder.embed_tokens.weight"}
    for k, v in ms_sd.items():
        assert v.dtype == np.float32 and np.array_equal(v, hf_sd[k]), k
    ids, mask = t5_ids()
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
        pt_out = pt_model.eval()(ids, mask).numpy()
    ms_out = ms_model(ms.Tensor(ids), ms.Tensor(mask)).asnumpy()
    np.testing.assert_array_equal(pt_out, ref)   # the reference is transformers' own arithmetic
    assert np.linalg.norm(ms_out - ref) / np.linalg.norm(ref) < 1e-5  # model_small fp32 ceiling


def test_t5_convert_cli_report_drops_decoder(tmp_path):
    folder = str(tmp_path / "t5")
    write_t5_release(folder, "fp16", safe=False)
    rep = converters.convert(folder, str(tmp_path / "t5.ckpt"), progress=False)
    # per block: q, k, v, o, 2 norms, wi_0, wi_1, wo; + relative bias, shared, final norm
    assert rep.tensors == 2 * 9 + 3
    dropped = " ".join(rep.dropped)
    assert "decoder.block.0.layer.0.SelfAttention.q.weight" in dropped and "lm_head.weight" in dropped
    assert "encoder.embed_tokens.weight" in dropped
    model = converters.from_pretrained(M.T5EncoderModel, str(tmp_path / "t5.ckpt"), "ms", **T5_KW)
    assert model.shared.weight.shape == (T5_KW["vocab_size"], T5_KW["d_model"])


def test_t5_strict_failure_names_the_key(tmp_path):
    folder = str(tmp_path / "t5")
    model = write_t5_release(folder, "fp32", safe=True)
    # a config that disagrees with the weights: one more layer than the file holds
    cfg = json.load(open(os.path.join(folder, "config.json")))
    cfg["num_layers"] = 3
    json.dump(cfg, open(os.path.join(folder, "config.json"), "w"))
    with pytest.raises(ConversionError, match=r"encoder\.block\.2\."):
        M.T5EncoderModel.from_pretrained(folder)
    del model


def write_clip_release(folder, legacy_position_ids=False):
    """A whole-CLIP folder (text + vision towers, projections, logit_scale) like openai/clip-vit-large-patch14."""
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(text_config=CLIP_TEXT,
                                  vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                                     num_attention_heads=4, image_size=32, patch_size=16),
                                  projection_dim=16)
    model = transformers.CLIPModel(cfg)
    model.save_pretrained(folder)
    if legacy_position_ids:  # older files: a pytorch_model.bin with the (then persistent) position_ids buffer
        os.remove(os.path.join(folder, "model.safetensors"))
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        sd["text_model.embeddings.position_ids"] = torch.arange(CLIP_TEXT["max_position_embeddings"])[None]
        torch.save(sd, os.path.join(folder, "pytorch_model.bin"))
    return model


@pytest.mark.parametrize("legacy", [False, True])
def test_clip_release_folder_loads_text_tower(tmp_path, legacy):
    folder = str(tmp_path / "clip")
    write_clip_release(folder, legacy)
    ms_model = M.CLIPTextModel.from_pretrained(folder)
    pt_model = P.CLIPTextModel.from_pretrained(folder).eval()
    hf = transformers.CLIPTextModel.from_pretrained(folder).eval()
    ms_sd = converters.model_tensors(ms_model, "ms")
    hf_sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    assert set(ms_sd) == set(hf_sd) and all(k.startswith(("embeddings.", "encoder.", "final_layer_norm."))
                                            for k in ms_sd)
    for k, v in ms_sd.items():
        assert np.array_equal(v, hf_sd[k]), k
    ids = np.array([[0, 5, 7, 9, 2, 1, 1], [0, 3, 2, 1, 1, 1, 1]])   # eos_token_id 2 -> argmax pooling
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids)).pooler_output.numpy()
        pt_pooled = pt_model(ids)[1].numpy()
    ms_pooled = ms_model(ms.Tensor(ids))[1].asnumpy()
    np.testing.assert_array_equal(pt_pooled, ref)
    assert np.linalg.norm(ms_pooled - ref) / np.linalg.norm(ref) < 1e-5
    rep = converters.convert(folder, str(tmp_path / "clip_text.safetensors"), progress=False)
    dropped = " ".join(rep.dropped)
    assert "vision_model." in dropped and "logit_scale" in dropped and "text_projection.weight" in dropped
    assert ("text_model.embeddings.position_ids" in dropped) == legacy
