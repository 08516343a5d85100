"""Converters from the published pretrained files to our formats, without jax or flax (issue 5).

- `lwm`: LWM-Chat-1M's streaming msgpack checkpoint -> a `transformers` Llama folder with one merged vocabulary.
- `vqgan`: LWM's VQGAN parameter pickle (read by a restricted unpickler) -> a `diffusers.VQModel` folder;
  an aMUSEd `vqvae/` folder is taken as is.

Each runs once per download (`openvica convert ...`); everything after reads safetensors only.
"""
