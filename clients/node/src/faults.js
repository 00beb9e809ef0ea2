/** How the `error` of a delivery attempt that an injected fault changed begins. */
const INJECTED_FAULT = 'injected fault:';

/**
 * Whether a delivery attempt (an entry of a notification's `attempts` in
 * `switchboard.deliveries()`) was changed by an injected fault.
 * @param {{error: string | null}} attempt
 * @returns {boolean}
 */
export function isInjected(attempt) {
  return typeof attempt.error === 'string' && attempt.error.startsWith(INJECTED_FAULT);
}
