"""Rare-scenario datasets for perception testing (docs/design.md "Scenarios"), installed as `openvica_sim.scenarios`.

    openvica scenarios generate --spec night-rain --out DATASET [--bundle B] [--clips STORE] [key=value ...]
    openvica scenarios replay DATASET CLIP_ID
    openvica scenarios mine --clips STORE --bundle B --out surprise.parquet
    openvica scenarios test DATASET --detector module:function

spec.py (specs), query.py (the clip query), ego.py (ego programs), generate.py (the generator), dataset.py (the
folder it writes), review.py (review page), mine.py (surprise of real clips), harness.py (a detector's report).
"""
