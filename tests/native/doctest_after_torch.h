// Include after every libtorch header: c10's logging defines a CHECK macro
// that would otherwise replace doctest's, and failed checks would abort
// instead of being reported.
#pragma once

#undef CHECK
#include <doctest.h>
