"""The claims of shared/claims.md that the precision plugin judges (ids, statements, sources and checks),
and the arithmetic of those judged from published figures."""

from __future__ import annotations


from bench.contract import Check, Claim




CLAIMS: tuple[Claim, ...] = (
    Claim(
        id='mem.store_fp32',
        claim='1B params take 4 GB at fp32',
        source='course notes week 1; IEEE 754 binary32 = 4 bytes',
        expected='4 bytes/param',
        tolerance='exact',
        check=Check('exact', value=4),
        needs='run `bench run --plugin precision` (CPU is enough)',
        metric='bytes_per_param',
        unit='bytes/param',
    ),
    Claim(
        id='mem.store_16bit',
        claim='16-bit (fp16, bf16) halves it: 2 GB',
        source='course notes week 1; IEEE 754 binary16 / bfloat16 = 2 bytes',
        expected='2 bytes/param',
        tolerance='exact',
        check=Check('exact', value=2),
        needs='run `bench run --plugin precision` (CPU is enough)',
        metric='bytes_per_param',
        unit='bytes/param',
    ),
    Claim(
        id='mem.train_24x',
        claim='training 1B at fp32 needs ~24 GB (weights 4 + Adam 8 + grads 4 + activations 8 bytes/param), ~6x the weights',
        source='course notes week 1',
        expected='model states 16 bytes/param exactly (fp32 AdamW); total ~24 bytes/param at some batch x sequence',
        tolerance='model states exact; total: the plugin says under which batch/sequence it holds',
        check=Check('plugin'),
        needs='run `bench run --plugin precision` (CPU is enough)',
        metric='total_bytes_per_param',
        unit='bytes/param',
    ),
    Claim(
        id='prec.pi_fp32',
        claim='3.141592 stored in fp32 is 3.1415920257568359375',
        source='IEEE 754 binary32 (1 sign, 8 exponent, 23 fraction bits; 0x40490FD8)',
        expected='3.1415920257568359375',
        tolerance='exact',
        check=Check('exact', value='3.1415920257568359375'),
        needs='run `bench run --plugin precision` (CPU is enough)',
        metric='value',
    ),
    Claim(
        id='prec.pi_fp16',
        claim='fp16 gives 3.140625',
        source='IEEE 754 binary16 (1/5/10 bits)',
        expected='3.140625',
        tolerance='exact',
        check=Check('exact', value='3.140625'),
        needs='run `bench run --plugin precision` (CPU is enough)',
        metric='value',
    ),
    Claim(
        id='prec.pi_bf16',
        claim='bf16 gives 3.140625',
        source="bfloat16 (1/8/7 bits, fp32's exponent range)",
        expected='3.140625',
        tolerance='exact',
        check=Check('exact', value='3.140625'),
        needs='run `bench run --plugin precision` (CPU is enough)',
        metric='value',
    ),
    Claim(
        id='prec.pi_int8',
        claim='int8 (naive cast, no scale) projects pi to 3',
        source='course notes week 1; int8 range -128..127',
        expected='3',
        tolerance='exact',
        check=Check('exact', value='3'),
        needs='run `bench run --plugin precision` (CPU is enough)',
        metric='value',
    ),
    Claim(
        id='prec.ranges',
        claim='fp32 max ~3.4e38; fp16 max 65504; bf16 max ~3.39e38',
        source='torch.finfo; IEEE 754',
        expected='3.4028e38 / 65504 / 3.3895e38',
        tolerance='exact',
        check=Check('plugin'),
        needs='run `bench run --plugin precision` (CPU is enough)',
        metric='max',
    ),
    Claim(
        id='prec.bf16_training',
        claim='bf16 trains like fp32 (most popular choice)',
        source='course notes week 1',
        expected='final loss of bf16 autocast within 2% of fp32 (same model, text, seed)',
        tolerance='|diff| <= 2%',
        check=Check('max', value=2),
        needs='run `bench run --plugin precision` (CPU is enough)',
        metric='bf16_vs_fp32_pct',
        unit='%',
    ),
)
