/**
 * `npm run bench -- --profile` preloads this into every service (NODE_OPTIONS=--import, which refuses --cpu-prof):
 * V8's sampling CPU profiler starts on SIGUSR2 (the benchmark sends it once the system is up, so that start-up, which
 * is mostly tsx compiling modules, stays out of the profile) and runs until exit; the profile is written to
 * $MCSV_CPU_PROFILE_DIR/<service>-<pid>.cpuprofile (open it in Chrome DevTools or speedscope). Plain JavaScript,
 * because it loads before tsx.
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";

const dir = process.env.MCSV_CPU_PROFILE_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 500 });
  let started = false;
  process.on("SIGUSR2", () => {
    if (started) return;
    started = true;
    session.post("Profiler.start");
  });
  const name = /services\/([a-z]+)\/main\.ts$/.exec(process.argv.find((a) => a.endsWith("main.ts")) ?? "")?.[1] ?? "node";
  // A same-thread inspector session answers synchronously, so this works inside the exit handler.
  process.once("exit", () => {
    if (!started) return;
    session.post("Profiler.stop", (error, result) => {
      if (!error) writeFileSync(join(dir, `${name}-svc-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
