//! Integration tests: every binary run as a user runs it, with assert_cmd, in a temporary
//! directory, with a cleared environment. One module per tool.

mod bounded_memory;
mod colour;
mod common;
mod ddpm_denoise;
mod ddpm_diffusers;
mod ddpm_eval;
mod ddpm_guidance;
mod ddpm_noise;
mod ddpm_train;
mod flags;
mod help;
mod hostile_input;
mod img_classify;
mod img_fid;
mod img_grid;
mod img_pack;
mod img_plot;
mod img_select;
mod inception_fid;
mod interrupt;
mod pipes;
mod prior;
mod pytorch_vqvae2;
mod reliability;
mod shard;
mod sizes_and_flags;
mod tensor_cat;
mod threads;
mod vae_conv;
mod vae_decode;
mod vae_encode;
mod vae_eval;
mod vae_train;
mod vq_codes;
mod vqvae2_train;
