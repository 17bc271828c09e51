"""Temporary device check for the NCSN pieces (not part of the project)."""
import os, sys, time, math, json
import torch
import torch.nn.functional as F
sys.path.insert(0, "src")
from ebmlab.train import train
from ebmlab.score_models import NCSNConv, geometric_sigmas
from ebmlab.objectives.ncsn import NCSNObjective
from ebmlab.samplers.annealed import annealed_langevin, sample_noise_conditional
from ebmlab.data import load_dataset
from ebmlab import plots

dev = sys.argv[1]; scale = float(sys.argv[2]); out = os.environ.get("OUT", "/tmp/ncsn/out"); os.makedirs(out, exist_ok=True)
device = torch.device(dev)
print("device", torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "torch", torch.__version__, flush=True)
g = torch.Generator(device=device).manual_seed(0)
# 1. both parametrisations, loss+backward and annealed sampling on the device
for p in ("score", "energy"):
    m = NCSNConv(1, 8, 8, base_width=16, num_blocks=2, parametrization=p).to(device)
    x = torch.rand(32, 1, 8, 8, device=device, generator=g)
    loss, met = NCSNObjective().loss(m, x, g); loss.backward()
    s = sample_noise_conditional(m, 16, g, steps_per_level=3)
    print(p, "loss", round(met["loss"], 3), "samples", tuple(s.shape), s.device, bool(torch.isfinite(s).all()), flush=True)
# 2. trainer on digits, 8x8
t = time.time()
r = train(dict(data="digits", model="ncsn_conv", objective="ncsn", device=dev, steps=int(3000 * scale), batch_size=128,
               lr=1e-3, out=os.path.join("/tmp", "ncsn_digits_" + dev), progress="off", checkpoint_every=100000))
print("digits trainer", r.step, "steps", round(time.time() - t, 1), "s; final", {k: round(v, 4) for k, v in r.metrics[-1].items()}, flush=True)
os.system(f"cp /tmp/ncsn_digits_{dev}/samples.png {out}/digits_samples.png")
# 3. 28x28 stand-in for MNIST (digits upsampled), own loop
data = load_dataset("digits").x.float()
big = F.interpolate(data, size=(28, 28), mode="bilinear", align_corners=False).to(device)
z = (big - big.mean()) / big.std()
model = NCSNConv(1, 28, 28, base_width=64, num_blocks=4).to(device)
obj = NCSNObjective(sigma_min=0.01, num_levels=10); obj.setup(model, z)
opt = torch.optim.Adam(model.parameters(), lr=5e-4)
steps = int(4000 * scale)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
if dev == "cuda": torch.cuda.synchronize()
t = time.time()
for i in range(steps):
    idx = torch.randint(0, z.shape[0], (128,), device=device, generator=g)
    loss, met = obj.loss(model, z[idx], g); opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    if i % 1000 == 0: print(" step", i, round(met["loss_per_dim"], 4), flush=True)
if dev == "cuda": torch.cuda.synchronize()
tt = time.time() - t
print("28x28 train", steps, "steps", round(tt, 1), "s", round(1e3 * tt / steps, 2), "ms/step; sigmas", [round(v, 3) for v in model.sigmas.tolist()], flush=True)
t = time.time()
with torch.no_grad():
    s = sample_noise_conditional(model.eval(), 64, g, steps_per_level=100)
if dev == "cuda": torch.cuda.synchronize()
print("28x28 annealed sampling 64 x 1000 steps", round(time.time() - t, 1), "s", flush=True)
plots.save_image_grid((s * big.std() + big.mean()).clamp(0, 1).cpu(), os.path.join(out, "digits28_samples.png"))
print("done", flush=True)
