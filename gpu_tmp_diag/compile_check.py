"""Compiled energies give the same sampler trajectories as eager ones (per mode)."""
import sys, time, torch
from ebmlab.energy import MLPEnergy, ConvEnergy, compile_energy
from ebmlab.samplers import MALA, HMC, RandomWalkMetropolis
dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cpu")
modes = sys.argv[2:] or ["default"]
for name, make in [("mlp", lambda: MLPEnergy(2, (128, 128))), ("conv", lambda: ConvEnergy(1, 28, 28, base_width=8))]:
    torch.manual_seed(0)
    E = make().to(dev).eval().requires_grad_(False)
    for mode in modes:
        t = time.time()
        Ec = compile_energy(E, mode=None if mode == "default" else mode)
        x0 = torch.randn(256, *E.event_shape, device=dev, generator=torch.Generator(dev).manual_seed(0))
        for K in [RandomWalkMetropolis(0.05), MALA(1e-2), HMC(1e-2, 3)]:
            out = []
            for en in (E, Ec):
                g = torch.Generator(dev).manual_seed(1)
                s = K.init(en, x0)
                for _ in range(6):
                    s, info = K.step(en, s, g)
                out.append((s, info))
            (s0, i0), (s1, i1) = out
            dx = (s0.x - s1.x).abs().max().item()
            de = ((s0.energy - s1.energy).abs().max() / s0.energy.abs().max()).item()
            dg = 0.0 if s0.grad is None else ((s0.grad - s1.grad).abs().max() / s0.grad.abs().max()).item()
            acc = (i0.accepted == i1.accepted).float().mean().item()
            ok = dx < 1e-3 and de < 1e-3 and dg < 1e-3
            print(f"{dev.type} {name} mode={mode} {K.name}: max|dx|={dx:.1e} rel dE={de:.1e} rel dgrad={dg:.1e} same-accept={acc:.3f} {'OK' if ok else 'MISMATCH'}", flush=True)
        print(f"  ({time.time() - t:.1f} s incl. compile)", flush=True)
