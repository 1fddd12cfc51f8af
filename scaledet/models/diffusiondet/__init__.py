"""Detection as generative denoising of box sets: DiffusionDet (DDPM training, DDIM sampling
with box renewal and an ensemble over steps) and its rectified-flow variant (Euler sampling),
on the :mod:`scaledet.nn.diffusion` schedules and the set loss of :mod:`scaledet.models.detr`
(presets ``diffusiondet-n`` and ``flowdet-n``)."""
