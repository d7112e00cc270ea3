"""End to end against diffusers' StableVideoDiffusionPipeline (test-only oracle), loading the same diffusers
folder (unet/, vae/, image_encoder/) through our loader: conditioning (CLIP preprocessing, VAE mode, the
fps/motion/noise vector), EDM-v preconditioning, the per-frame CFG ramp and Euler sampling must agree."""

import numpy as np
import pytest
import torch
from PIL import Image

from i2v.image import to_tensor
from i2v.pipelines.svd import SVDPipeline


def _perturb(m, scale=0.05):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # every weight non-zero (diffusers zero-initialises output convs and mixers)
        for name, p in m.named_parameters():
            if name.endswith("mix_factor"):
                p.normal_(0, 1.0, generator=g)
            else:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    return m.eval()


def test_sampled_latents_match_diffusers_svd_pipeline(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    chans = (32, 64)
    unet = _perturb(diffusers.UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4, block_out_channels=chans, layers_per_block=1,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=32,
        num_attention_heads=tuple(c // 16 for c in chans), transformer_layers_per_block=1,
        projection_class_embeddings_input_dim=768, addition_time_embed_dim=256, num_frames=25))
    vae = _perturb(diffusers.AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=2))
    clip = _perturb(transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, image_size=224,
        patch_size=32, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5)))
    scheduler = diffusers.EulerDiscreteScheduler(  # SVD's scheduler/scheduler_config.json
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, interpolation_type="linear",
        prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002, steps_offset=1, timestep_spacing="leading",
        timestep_type="continuous", use_karras_sigmas=True)
    ref = diffusers.StableVideoDiffusionPipeline(vae=vae, image_encoder=clip, unet=unet, scheduler=scheduler,
                                                 feature_extractor=transformers.CLIPImageProcessor())
    ref.save_pretrained(tmp_path)
    for name, mod in unet.named_modules():  # known difference: the original's ResNet GroupNorm eps is 1e-5
        if isinstance(mod, torch.nn.GroupNorm) and ".resnets." in name:
            mod.eps = 1e-5
    ref = ref.to(torch.float64)

    y, x = np.mgrid[0:64, 0:64]
    img = Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], -1).astype(np.uint8))
    T, steps = 2, 2
    noise = torch.randn(1, T, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():  # diffusers' fps argument is ours + 1; noise_aug 0 so its own noise draw does not matter
        expected = ref(img, height=64, width=64, num_frames=T, num_inference_steps=steps, min_guidance_scale=1.0,
                       max_guidance_scale=3.0, fps=7, motion_bucket_id=127, noise_aug_strength=0.0,
                       latents=noise.clone(), output_type="latent").frames[0]  # (T, 4, h, w)

    pipe = SVDPipeline.from_pretrained(tmp_path, dtype=torch.float64, log=lambda *a: None)
    assert pipe.preset_name == "svd_xt"  # from unet/config.json num_frames = 25
    cond, uncond = pipe.condition(to_tensor(img, (-1.0, 1.0), torch.float64), T, fps_id=6, motion_bucket_id=127, cond_aug=0.0)
    latents = pipe.sample(cond, uncond, steps, min_cfg=1.0, max_cfg=3.0, noise=noise[0], progress=False)
    err = ((latents - expected).abs().max() / expected.abs().max()).item()
    assert err <= 1e-4, err  # ~1e-5: diffusers keeps its sigmas in float32 (the parity target is 1e-4)
