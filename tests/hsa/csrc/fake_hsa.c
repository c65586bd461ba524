/* Test helper, compiled by the tests with `cc` against the real ROCm headers.
 *
 * 1. A pump: call any hsa_amd_system_event_callback_t from fresh pthreads (foreign threads,
 *    not created by Python), each thread walking an array of real hsa_amd_event_t structs.
 * 2. A fake HSA runtime exporting hsa_init, hsa_shut_down, hsa_status_string and
 *    hsa_amd_register_system_event_handler, so the monitor can be driven end to end without a
 *    GPU: fake_hsa_fire() delivers events to the registered handlers from a runtime-owned
 *    pthread, the way ROCR's async-events thread does.
 *
 * Built with -Wl,-Bsymbolic so these hsa_* definitions never interpose on a real runtime loaded
 * in the same process (and vice versa).
 */
#include <hsa/hsa.h>
#include <hsa/hsa_ext_amd.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- pump ----------------------------------------------------------------------------- */

struct pump_job {
  hsa_amd_system_event_callback_t cb;
  void *data;
  const hsa_amd_event_t *events;
  size_t n_events;
  size_t repeat;
  size_t success;   /* callbacks that answered HSA_STATUS_SUCCESS */
  size_t other;     /* callbacks that answered anything else */
  pthread_t self_id;
};

static void *pump_thread(void *arg) {
  struct pump_job *job = (struct pump_job *)arg;
  job->self_id = pthread_self();
  for (size_t r = 0; r < job->repeat; r++) {
    for (size_t i = 0; i < job->n_events; i++) {
      hsa_status_t st = job->cb(&job->events[i], job->data);
      if (st == HSA_STATUS_SUCCESS) job->success++; else job->other++;
    }
  }
  return NULL;
}

/* Calls cb(events[i], data) for every event, `repeat` times, in each of `n_threads` new
 * pthreads running concurrently. Writes the totals of SUCCESS / other answers. Returns 0, or
 * -1 when a thread could not be created. */
int pump_events(hsa_amd_system_event_callback_t cb, void *data, const hsa_amd_event_t *events,
                size_t n_events, size_t repeat, int n_threads, size_t *success, size_t *other) {
  struct pump_job *jobs = calloc((size_t)n_threads, sizeof *jobs);
  pthread_t *threads = calloc((size_t)n_threads, sizeof *threads);
  int rc = 0, started = 0;
  if (!jobs || !threads) { free(jobs); free(threads); return -1; }
  for (int t = 0; t < n_threads; t++) {
    jobs[t] = (struct pump_job){cb, data, events, n_events, repeat, 0, 0, 0};
    if (pthread_create(&threads[t], NULL, pump_thread, &jobs[t]) != 0) { rc = -1; break; }
    started++;
  }
  *success = 0; *other = 0;
  for (int t = 0; t < started; t++) {
    pthread_join(threads[t], NULL);
    *success += jobs[t].success;
    *other += jobs[t].other;
  }
  free(jobs); free(threads);
  return rc;
}

/* The layout of hsa_amd_event_t as the real header defines it, for the layout test. */
size_t pump_sizeof_event(void) { return sizeof(hsa_amd_event_t); }

/* ---- fake runtime --------------------------------------------------------------------- */

#define MAX_HANDLERS 8
static struct { hsa_amd_system_event_callback_t cb; void *data; } handlers[MAX_HANDLERS];
static int n_handlers = 0;
static int refcount = 0;
static hsa_status_t init_status = HSA_STATUS_SUCCESS;
static hsa_status_t register_status = HSA_STATUS_SUCCESS;
static int init_calls = 0, shut_down_calls = 0;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

hsa_status_t HSA_API hsa_init() {
  pthread_mutex_lock(&lock);
  init_calls++;
  hsa_status_t st = init_status;
  if (st == HSA_STATUS_SUCCESS) refcount++;
  pthread_mutex_unlock(&lock);
  return st;
}

hsa_status_t HSA_API hsa_shut_down() {
  pthread_mutex_lock(&lock);
  shut_down_calls++;
  hsa_status_t st = refcount > 0 ? HSA_STATUS_SUCCESS : HSA_STATUS_ERROR_NOT_INITIALIZED;
  if (refcount > 0) refcount--;
  pthread_mutex_unlock(&lock);
  return st;
}

hsa_status_t HSA_API hsa_status_string(hsa_status_t status, const char **status_string) {
  if (!status_string) return HSA_STATUS_ERROR_INVALID_ARGUMENT;
  switch ((int)status) {
    case HSA_STATUS_ERROR_OUT_OF_RESOURCES:
      *status_string = "HSA_STATUS_ERROR_OUT_OF_RESOURCES: fake runtime out of resources. Detail.";
      return HSA_STATUS_SUCCESS;
    default:
      return HSA_STATUS_ERROR_INVALID_ARGUMENT;
  }
}

hsa_status_t HSA_API hsa_amd_register_system_event_handler(hsa_amd_system_event_callback_t callback,
                                                           void *data) {
  pthread_mutex_lock(&lock);
  hsa_status_t st = register_status;
  if (refcount == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (!callback) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else if (n_handlers >= MAX_HANDLERS) st = HSA_STATUS_ERROR_OUT_OF_RESOURCES;
  if (st == HSA_STATUS_SUCCESS) {
    handlers[n_handlers].cb = callback;
    handlers[n_handlers].data = data;
    n_handlers++;
  }
  pthread_mutex_unlock(&lock);
  return st;
}

void fake_hsa_configure(int init_st, int register_st) {
  pthread_mutex_lock(&lock);
  init_status = (hsa_status_t)init_st;
  register_status = (hsa_status_t)register_st;
  pthread_mutex_unlock(&lock);
}

void fake_hsa_counts(int *inits, int *shut_downs, int *refs, int *n_registered) {
  pthread_mutex_lock(&lock);
  *inits = init_calls; *shut_downs = shut_down_calls; *refs = refcount; *n_registered = n_handlers;
  pthread_mutex_unlock(&lock);
}

struct fire_job {
  const hsa_amd_event_t *events;
  size_t n_events, repeat, success, other;
};

static void *fire_thread(void *arg) {
  struct fire_job *job = (struct fire_job *)arg;
  for (size_t r = 0; r < job->repeat; r++) {
    for (size_t i = 0; i < job->n_events; i++) {
      /* Like ROCR's VMFaultHandler: handled if any handler answers SUCCESS. */
      pthread_mutex_lock(&lock);
      int n = n_handlers;
      pthread_mutex_unlock(&lock);
      hsa_status_t answer = HSA_STATUS_ERROR;
      for (int h = 0; h < n; h++)
        if (handlers[h].cb(&job->events[i], handlers[h].data) == HSA_STATUS_SUCCESS)
          answer = HSA_STATUS_SUCCESS;
      if (answer == HSA_STATUS_SUCCESS) job->success++; else job->other++;
    }
  }
  return NULL;
}

/* Deliver events to every registered handler from one runtime-owned pthread; returns 0. */
int fake_hsa_fire(const hsa_amd_event_t *events, size_t n_events, size_t repeat, size_t *handled,
                  size_t *unhandled) {
  struct fire_job job = {events, n_events, repeat, 0, 0};
  pthread_t thread;
  if (pthread_create(&thread, NULL, fire_thread, &job) != 0) return -1;
  pthread_join(thread, NULL);
  *handled = job.success;
  *unhandled = job.other;
  return 0;
}
