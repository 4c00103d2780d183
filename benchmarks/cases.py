"""Every benchmark case, by op (one cases_<op>.py file per op)."""
from cases_info_nce import CASES as INFO_NCE
from cases_prior import CASES as PRIOR

CASES = {"prior": PRIOR, "info_nce": INFO_NCE}
