export { Switchboard, SwitchboardError } from './src/switchboard.js';
export { Receiver } from './src/receiver.js';
export { NotificationTokenValidator } from './src/jwt.js';
export { useSwitchboard } from './src/hooks.js';
export { devSetup } from './src/dev.js';
export { isInjected } from './src/faults.js';
