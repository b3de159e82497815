/**
 * The signed-in session: the API key and the address whose conversions the page shows. Kept in sessionStorage only
 * (never localStorage, never a cookie): it lives as long as the tab, and signing out forgets it.
 */
const API_KEY = "mcsv.console.apiKey";
const EMAIL = "mcsv.console.email";

export interface Session {
  apiKey: string;
  email: string;
}

export function currentSession(): Session | undefined {
  const apiKey = sessionStorage.getItem(API_KEY);
  const email = sessionStorage.getItem(EMAIL);
  return apiKey && email ? { apiKey, email } : undefined;
}

export function keepSession(session: Session): void {
  sessionStorage.setItem(API_KEY, session.apiKey);
  sessionStorage.setItem(EMAIL, session.email);
}

export function forgetSession(): void {
  sessionStorage.removeItem(API_KEY);
  sessionStorage.removeItem(EMAIL);
}
