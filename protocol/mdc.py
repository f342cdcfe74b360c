"""IEEE 11073-10101 nomenclature codes (partition x 65536 + term code) used on the wire.

Sources: ../shared/reference/clinical.md (entries marked [check] there are marked here too)
and the 11073-10101 dimension table for units. Codes are numbers on the wire; the names
are for people and for the gateway's JSON outputs.
"""

from protocol import const

# Physiological quantities
SPO2 = const(150456)  # MDC_PULS_OXIM_SAT_O2
PULSE_OXIM = const(149530)  # MDC_PULS_OXIM_PULS_RATE
PERF_INDEX = const(150488)  # MDC_PULS_OXIM_PERF_REL [check]
PULSE_NIBP = const(149546)  # MDC_PULS_RATE_NON_INV
NIBP_SYS = const(150021)  # MDC_PRESS_BLD_NONINV_SYS
NIBP_DIA = const(150022)  # MDC_PRESS_BLD_NONINV_DIA
NIBP_MEAN = const(150023)  # MDC_PRESS_BLD_NONINV_MEAN
HR_ECG = const(147842)  # MDC_ECG_HEART_RATE [check: name]
RESP_RATE = const(151562)  # MDC_RESP_RATE
AWAY_RESP_RATE = const(151570)  # MDC_AWAY_RESP_RATE
ETCO2 = const(151728)  # end-tidal CO2 partial pressure [check]

# Pump quantities
FLOW_RATE = const(157784)  # MDC_FLOW_FLUID_PUMP
VOL_TBI = const(157884)  # volume to be infused [check]
VOL_DELIVERED = const(157993)  # volume delivered total [check]

# Units (MDC_DIM_*; partition 4)
DIM_PERCENT = const(262688)
DIM_BEAT_PER_MIN = const(264864)
DIM_RESP_PER_MIN = const(264928)
DIM_MMHG = const(266016)
DIM_MICRO_L = const(263763)
DIM_MICRO_L_PER_HR = const(265267)  # [check]
DIM_DIMLESS = const(262656)

NAMES = {
    SPO2: "MDC_PULS_OXIM_SAT_O2",
    PULSE_OXIM: "MDC_PULS_OXIM_PULS_RATE",
    PERF_INDEX: "MDC_PULS_OXIM_PERF_REL",
    PULSE_NIBP: "MDC_PULS_RATE_NON_INV",
    NIBP_SYS: "MDC_PRESS_BLD_NONINV_SYS",
    NIBP_DIA: "MDC_PRESS_BLD_NONINV_DIA",
    NIBP_MEAN: "MDC_PRESS_BLD_NONINV_MEAN",
    HR_ECG: "MDC_ECG_HEART_RATE",
    RESP_RATE: "MDC_RESP_RATE",
    AWAY_RESP_RATE: "MDC_AWAY_RESP_RATE",
    ETCO2: "MDC_AWAY_CO2_ET",
    FLOW_RATE: "MDC_FLOW_FLUID_PUMP",
    VOL_TBI: "MDC_VOL_FLUID_TBI",
    VOL_DELIVERED: "MDC_VOL_FLUID_DELIV_TOTAL",
}

UNIT_NAMES = {
    DIM_PERCENT: "%",
    DIM_BEAT_PER_MIN: "/min",
    DIM_RESP_PER_MIN: "/min",
    DIM_MMHG: "mm[Hg]",
    DIM_MICRO_L: "uL",
    DIM_MICRO_L_PER_HR: "uL/h",
    DIM_DIMLESS: "1",
}

# The unit each vital must be sent in: a receiver rejects any other (schema.bad_unit).
UNITS = {
    SPO2: DIM_PERCENT,
    PULSE_OXIM: DIM_BEAT_PER_MIN,
    PERF_INDEX: DIM_PERCENT,
    PULSE_NIBP: DIM_BEAT_PER_MIN,
    NIBP_SYS: DIM_MMHG,
    NIBP_DIA: DIM_MMHG,
    NIBP_MEAN: DIM_MMHG,
    HR_ECG: DIM_BEAT_PER_MIN,
    RESP_RATE: DIM_RESP_PER_MIN,
    AWAY_RESP_RATE: DIM_RESP_PER_MIN,
    ETCO2: DIM_MMHG,
}
