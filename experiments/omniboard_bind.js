// Loaded with `node -r` before Omniboard by experiments/omniboard.py.
//
// The run database: the connection string (it may hold a password) arrives through a pipe whose file descriptor is
// in $TICKETLAB_OMNIBOARD_URI_FD, never on a command line or in the environment the process started with (both
// readable in /proc). Read here, it becomes MONGO_URI inside this process only (what Omniboard reads when it is
// given no -m or --mu; a variable set at run time is not in /proc/PID/environ), and is removed again once
// Omniboard has read it, when its modules have loaded, so no process it might start inherits it.
const fs = require('fs');
const uriFd = process.env.TICKETLAB_OMNIBOARD_URI_FD;
if (uriFd !== undefined) {
  delete process.env.TICKETLAB_OMNIBOARD_URI_FD;
  process.env.MONGO_URI = fs.readFileSync(Number(uriFd), 'utf8');
  fs.closeSync(Number(uriFd));
  setImmediate(() => { delete process.env.MONGO_URI; });
}

// Omniboard's server calls app.listen(port), which binds every interface; this binds it to $OMNIBOARD_HOST
// (127.0.0.1 unless the user asks otherwise with `experiments.omniboard --host`).
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (/^\d+$/.test(String(args[0])) && typeof args[1] !== 'string') {
    args.splice(1, 0, process.env.OMNIBOARD_HOST || '127.0.0.1');
  }
  return listen.apply(this, args);
};
