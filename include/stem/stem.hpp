// stem — typed background tasks for C++20 services.
// stem.hpp — everything for a single process: core, contracts, in-memory adapters, runtime.
#pragma once

#include <stem/core/clock.hpp>
#include <stem/core/codec.hpp>
#include <stem/core/duration.hpp>
#include <stem/core/envelope.hpp>
#include <stem/core/error.hpp>
#include <stem/core/payload_encoder.hpp>
#include <stem/core/signature.hpp>
#include <stem/core/task_definition.hpp>
#include <stem/core/task_id.hpp>
#include <stem/core/task_options.hpp>
#include <stem/core/task_state.hpp>
#include <stem/core/task_status.hpp>

#include <stem/contracts/any_backend.hpp>
#include <stem/contracts/any_broker.hpp>
#include <stem/contracts/broker.hpp>
#include <stem/contracts/result_backend.hpp>
#include <stem/contracts/retry_strategy.hpp>

#include <stem/adapters/memory.hpp>

#include <stem/observe/signals.hpp>

#include <stem/runtime/app.hpp>
#include <stem/runtime/producer.hpp>
#include <stem/runtime/registry.hpp>
#include <stem/runtime/retry.hpp>
#include <stem/runtime/task_context.hpp>
#include <stem/runtime/task_handle.hpp>
#include <stem/runtime/worker.hpp>
#include <stem/canvas/canvas.hpp>
