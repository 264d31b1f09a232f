// Which backend the screens talk to: the Tauri app's commands, or the fake.
import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { Backend } from "./api";

export const BackendContext = createContext<Backend | null>(null);

export function useBackend(): Backend {
  const backend = useContext(BackendContext);
  if (!backend) throw new Error("useBackend outside <BackendContext.Provider>");
  return backend;
}
